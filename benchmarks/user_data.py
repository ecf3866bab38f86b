"""What the benchmarks write before they run: user strategies and instrument catalogues, through
the same environment variables a user sets (``TRADING_STRATEGIES_PATH``, ``TRADING_INSTRUMENTS_PATH``).

* :func:`alias_catalogue`: N catalogue aliases that all replay the shipped BTC/USDT candles (the
  measured work does not depend on prices, and the shipped catalogue has three spot crypto pairs).
* :func:`user_strategy`: a copy of ``spot_4h_majors`` with some fields changed, as ``<root>/strategies/<name>/defs.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def alias_catalogue(root: Path, prefix: str, n: int) -> tuple[Path, list[str]]:
    """``<root>/instruments.yaml`` with ``<prefix>00/USDT`` … (BTC/USDT's data and filters); its path and symbols."""
    catalogue = {f"{prefix}{i:02d}/USDT": {"asset_class": "crypto", "market": "spot",
                                          "data_file": "BINANCE_BTC-USDT_{timeframe}.csv", "lot_step": 0.00001,
                                          "min_qty": 0.00001, "tick_size": 0.01, "min_notional": 5}
                 for i in range(n)}
    path = root / "instruments.yaml"
    path.write_text(yaml.safe_dump({"instruments": catalogue}))
    return path, sorted(catalogue)


def user_strategy(root: Path, name: str, instruments: list[str], description: str, **sections) -> Path:
    """``spot_4h_majors`` renamed, on ``instruments``, with each keyword a top-level block merged
    over the shipped one (e.g. ``risk={"max_open_positions": 100}``). Returns the strategies folder."""
    attrs = yaml.safe_load((REPO / "trading_pipelines/defs/strategies/spot_4h_majors/defs.yaml").read_text())["attributes"]
    attrs.update(name=name, instruments=list(instruments), description=description)
    for key, value in sections.items():
        attrs[key] = {**attrs[key], **value} if isinstance(attrs.get(key), dict) else value
    folder = root / "strategies" / name
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": "trading_pipelines.components.StrategyComponent",
                                                      "attributes": attrs}, sort_keys=False))
    return folder.parent
