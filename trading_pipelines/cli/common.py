"""What every subcommand shares: ``DAGSTER_HOME``, the ledger report, the strategy by name and
:class:`CliError` (bad input: exit 2)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from trading_pipelines.config import REPO_DIR


def ensure_dagster_home() -> Path:
    """``DAGSTER_HOME`` (default ``./var/dagster_home``), created, with the repo's ``dagster.yaml``
    copied in when it has none."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / "var" / "dagster_home"))).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() and (REPO_DIR / "dagster.yaml").exists():
        shutil.copy(REPO_DIR / "dagster.yaml", cfg)
    return home



def _ledger_report(strategy: str | None, book: str | None = None) -> dict[str, list[dict]]:
    """The ledger's :func:`~trading_pipelines.ledger.repo.status_report`, through the same resource the runs use."""
    from trading_pipelines.ledger.db import session_scope
    from trading_pipelines.ledger.repo import status_report
    from trading_pipelines.resources.dagster_resources import default_resources

    with session_scope(default_resources()["trading"].ledger.engine()) as s:
        return status_report(s, strategy, book)


class CliError(Exception):
    """Bad input on the command line: printed as ``error: …``, exit status 2, nothing changed."""


def _strategy(name: str):
    """The strategy ``name``; other strategies' broken files are reported on stderr and skipped."""
    from trading_pipelines.config import load_strategies_report

    strategies, errors = load_strategies_report()
    for path, err in errors.items():
        if name not in Path(path).parts:
            print(f"warning: skipped a broken strategy file: {err}", file=sys.stderr)
    spec = strategies.get(name)
    if spec is None:
        own = [e for p, e in errors.items() if name in Path(p).parts]
        raise CliError((own[0] if own else f"unknown strategy {name!r} (known: {', '.join(sorted(strategies))})"))
    return spec
