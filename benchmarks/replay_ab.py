"""Replay throughput of this checkout against another commit, measured in one run, as a ratio.

    .venv/bin/python benchmarks/replay_ab.py [--base 39841a4] [--rounds 2] [--windows N]

Exports ``--base`` with ``git archive`` into a temporary folder and runs each tree's own
``benchmarks/replay.py`` (the same BTC/USDT 4h replay, charts off then on) in a subprocess with that
tree first on ``PYTHONPATH``, alternating base, new, base, new … so both see the same machine load.
Prints each run's windows/s, the load before it, and new ÷ base per round and as the median. The
issue's target: the new code is not slower (ratio ≥ 1 within the rounds' spread).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"charts (off|on)\s*: (\d+) windows in ([\d.]+) s = ([\d.]+) windows/s")


def export(rev: str, into: Path) -> Path:
    archive = into / "base.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as t:
        t.extractall(into / "tree", filter="data")
    return into / "tree"


def run(tree: Path, windows: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, str(tree / "benchmarks" / "replay.py")] + (["--windows", str(windows)] if windows else [])
    out = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    found = {m.group(1): float(m.group(4)) for m in LINE.finditer(out.stdout)}
    if set(found) != {"off", "on"}:
        raise SystemExit(f"{tree}: no result\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return found


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default="39841a4", help="the commit to compare with (default: the one before the engine)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--windows", type=int, default=0)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="replay_ab_") as tmp:
        base = export(a.base, Path(tmp))
        ratios: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(a.rounds):
            load = Path("/proc/loadavg").read_text().split()[0]
            old = run(base, a.windows)
            load2 = Path("/proc/loadavg").read_text().split()[0]
            new = run(REPO, a.windows)
            for k in ratios:
                ratios[k].append(new[k] / old[k])
            print(f"round {r + 1}: base {a.base} off {old['off']:.1f} on {old['on']:.1f} windows/s (load {load}); "
                  f"new off {new['off']:.1f} on {new['on']:.1f} (load {load2}); "
                  f"new ÷ base off {ratios['off'][-1]:.3f} on {ratios['on'][-1]:.3f}", flush=True)
        print(f"median new ÷ base: charts off {statistics.median(ratios['off']):.3f}, "
              f"charts on {statistics.median(ratios['on']):.3f} over {a.rounds} rounds")


if __name__ == "__main__":
    main()
