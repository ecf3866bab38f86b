"""One run of one order route against the Binance stand-in, as a user runs it: the CLI's ``main(argv)``.

    python tests/crash_driver.py --route pipeline|manual --strategy-dir D --home H --standin URL \
        --strategy NAME --instrument SYMBOL --window START --now ISO [--kill-at-statement N] [--count-file F]

* ``CLIENTS["ccxt"]`` (trading_pipelines.venues.factory) is set to a real ccxt exchange whose
  ``urls['api']`` all point at the stand-in (tests/binance_standin.py ``ccxt_exchange``); the API key
  and secret come from the environment variables the strategy names (``BINANCE_API_KEY`` /
  ``BINANCE_SECRET``), exactly as the product reads them.
* The wall clock of the real venues is pinned to ``--now``: ``WALL_CLOCK`` is set on
  ``trading_pipelines.runtime`` if that module exists, and on ``trading_pipelines.services`` if it
  still has one (the lead is moving it), so both layouts work.
* ``--kill-at-statement N``: a global SQLAlchemy ``before_cursor_execute`` listener counts the
  statements sent to the *ledger* database (``TRADING_LEDGER_URL``; Dagster's own storage is not
  counted) and SIGKILLs this process just before the N-th one runs: nothing after it happens, no
  ``finally``, no rollback handler.
* ``--count-file F``: write the number of ledger statements this run executed (for the harness to
  size its kill range), at exit.
* Routes. ``pipeline``: ``review STRATEGY --start W --end W --instruments SYMBOL --quiet`` (the live
  book's account step for that one window). ``manual``: ``intent create STRATEGY SYMBOL buy|long
  --json`` unless the ledger already holds an entry intent of the strategy (a re-run after a crash
  resumes it), then ``intent execute ID --mode LIVE --acknowledge-risk --json``.

The exit status is the CLI's (0 ok, 1 the run or intent did not succeed, 2 refused); stdout/stderr
are the CLI's.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import signal
import sqlite3
import sys
from contextlib import redirect_stdout
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def pin_wall_clock(now: datetime) -> list[str]:
    """Set ``WALL_CLOCK`` wherever it lives; returns the modules it was set on."""
    import importlib

    pinned = []
    for name in ("trading_pipelines.runtime", "trading_pipelines.services"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "WALL_CLOCK") or name.endswith("runtime"):
            mod.WALL_CLOCK = lambda: now
            pinned.append(name)
    if not pinned:
        raise SystemExit("crash_driver: no module has WALL_CLOCK (trading_pipelines.runtime / .services)")
    return pinned


def install_kill(ledger_db: str, kill_at: int | None, count_file: str | None) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    target = os.path.realpath(ledger_db)
    state = {"n": 0}

    def before(conn, cursor, statement, parameters, context, executemany):
        db = conn.engine.url.database
        if not db or os.path.realpath(db) != target:
            return
        state["n"] += 1
        if kill_at is not None and state["n"] == kill_at:
            sys.stderr.write(f"crash_driver: SIGKILL before ledger statement {kill_at}: {statement[:120]!r}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(Engine, "before_cursor_execute", before)
    if count_file:
        atexit.register(lambda: Path(count_file).write_text(str(state["n"])))


def existing_entry_intent(ledger_db: str, strategy: str) -> str | None:
    """The newest entry intent of ``strategy`` on the live book (read with sqlite3: not counted)."""
    if not Path(ledger_db).exists():
        return None
    con = sqlite3.connect(ledger_db)
    try:
        row = con.execute("SELECT intent_id FROM intents WHERE strategy = ? AND book = 'live' AND kind = 'entry' "
                          "ORDER BY created_at DESC LIMIT 1", (strategy,)).fetchone()
    except sqlite3.OperationalError:  # no ledger tables yet
        return None
    finally:
        con.close()
    return row[0] if row else None


def cli(argv: list[str]) -> tuple[int, str]:
    from trading_pipelines.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    text = out.getvalue()
    sys.stdout.write(text)
    sys.stdout.flush()
    return rc, text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--route", choices=["pipeline", "manual"], required=True)
    ap.add_argument("--strategy-dir", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--standin", required=True)
    ap.add_argument("--strategy", required=True)
    ap.add_argument("--instrument", required=True)
    ap.add_argument("--side", default="buy")
    ap.add_argument("--window", help="the window's start (what `review --start` takes), ISO-8601 UTC")
    ap.add_argument("--now", required=True, help="the pinned wall clock, ISO-8601 UTC")
    ap.add_argument("--kill-at-statement", type=int)
    ap.add_argument("--count-file")
    args = ap.parse_args(argv)

    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("TRADING_LEDGER_URL", f"sqlite:///{home / 'ledger.sqlite'}")
    os.environ.setdefault("TRADING_CHART_DIR", str(home / "charts"))
    os.environ["TRADING_STRATEGIES_PATH"] = args.strategy_dir
    os.environ["TRADING_PIPELINES_LIVE"] = "1"
    url = os.environ["TRADING_LEDGER_URL"]
    if not url.startswith("sqlite:///"):
        raise SystemExit("crash_driver: the harness runs on a SQLite ledger")
    ledger_db = url[len("sqlite:///"):]

    from binance_standin import ccxt_exchange

    from trading_pipelines.venues import factory

    key, secret = os.environ["BINANCE_API_KEY"], os.environ["BINANCE_SECRET"]
    factory.CLIENTS["ccxt"] = lambda exchange_id: ccxt_exchange(exchange_id, args.standin, key, secret)
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
    pin_wall_clock(now)

    intent_id = existing_entry_intent(ledger_db, args.strategy) if args.route == "manual" else None
    install_kill(ledger_db, args.kill_at_statement, args.count_file)

    if args.route == "pipeline":
        rc, _ = cli(["review", args.strategy, "--start", args.window, "--end", args.window,
                     "--instruments", args.instrument, "--quiet"])
        return rc
    if intent_id is None:
        rc, text = cli(["intent", "create", args.strategy, args.instrument, args.side, "--json"])
        try:
            intent_id = json.loads(text)["intent_id"]
        except (ValueError, KeyError):
            sys.stderr.write(f"crash_driver: intent create gave no intent (exit {rc})\n")
            return rc or 1
    rc, _ = cli(["intent", "execute", intent_id, "--mode", "LIVE", "--acknowledge-risk", "--json"])
    return rc


if __name__ == "__main__":
    sys.exit(main())
