"""Where the shipped strategies, sample data and instrument catalogue live (absolute paths)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # trading_pipelines/
REPO_DIR = PACKAGE_DIR.parent
STRATEGIES_DIR = PACKAGE_DIR / "defs" / "strategies"
DEFAULT_DATA_DIR = REPO_DIR / "data" / "ohlcv"
INSTRUMENTS_FILE = REPO_DIR / "data" / "instruments.yaml"
