"""Strategy files: the shipped ones load; bad ones fail with the file and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trading_pipelines.config import STRATEGIES_DIR, StrategyConfigError, load_strategies, load_strategy_file

SPOT_FILE = STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml"


def _write(tmp_path: Path, mutate) -> Path:
    doc = yaml.safe_load(SPOT_FILE.read_text())
    mutate(doc["attributes"])
    p = tmp_path / "bad" / "defs.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc))
    return p


def test_shipped_strategies():
    specs = load_strategies()
    assert set(specs) == {"spot_4h_majors", "futures_1h_btc_eth", "equities_1d_spy_aapl"}
    spot, fut, eq = specs["spot_4h_majors"], specs["futures_1h_btc_eth"], specs["equities_1d_spy_aapl"]
    assert spot.mode.value == "spot" and spot.instruments == ("BTC/USDT", "ETH/USDT", "SOL/USDT") and spot.timeframe == "4h"
    assert fut.mode.value == "futures" and fut.futures.leverage == 3 and fut.futures.max_leverage == 5
    assert eq.instruments == ("SPY", "AAPL") and eq.timeframe == "1d"
    assert spot.review_cron == "0 */4 * * *"  # default: at each bar close
    assert spot.risk.risk_per_trade_pct == 1.0 and spot.execution.dry_run is True


@pytest.mark.parametrize("mutate,field,msg", [
    (lambda a: a["risk"].update(max_open_positionz=3), "attributes.risk.max_open_positionz", "unknown field"),
    (lambda a: a["risk"].update(risk_per_trade_pct=-1), "attributes.risk.risk_per_trade_pct", "greater than 0"),
    (lambda a: a.update(instruments=["BTC/USDT", "DOGE/USDT"]), "attributes", "instruments[1]: unknown instrument 'DOGE/USDT'"),
    (lambda a: a.update(instruments=["BTC/USDT:USDT"]), "attributes", "is a futures instrument, strategy mode is spot"),
    (lambda a: a.update(mode="margin"), "attributes.mode", "Input should be 'spot' or 'futures'"),
    (lambda a: a.update(futures={"leverage": 3}), "attributes", "spot mode takes no `futures` block"),
    (lambda a: a.update(timeframe="15m"), "attributes.timeframe", "Input should be"),
    (lambda a: a.update(venue={"kind": "binance"}), "attributes.venue", "does not match any of the expected tags: 'paper', 'ccxt', 'ibkr', 'webhook'"),
    (lambda a: a.update(venue={"kind": "ccxt", "exchange": "binanceusdm"}), "attributes",
     "venue.exchange 'binanceusdm' trades futures, strategy mode is spot (binance: spot, binanceusdm: futures)"),
    (lambda a: a.update(venue={"kind": "ccxt", "exchange": "kraken"}), "attributes.venue.ccxt.exchange", "Input should be 'binance' or 'binanceusdm'"),
    (lambda a: a.update(venue={"kind": "webhook"}), "attributes.venue.webhook.equity", "Field required"),
    (lambda a: a.update(venue={"kind": "ccxt", "exchange": "binance", "api_key": "sk-in-the-file"}),
     "attributes.venue.ccxt.api_key", "unknown field"),  # secrets never in the file: only the env var's name
])
def test_bad_strategy_file_names_file_and_field(tmp_path, mutate, field, msg):
    path = _write(tmp_path, mutate)
    with pytest.raises(StrategyConfigError) as e:
        load_strategy_file(path)
    text = str(e.value)
    assert str(path) in text and field in text and msg in text


def test_futures_leverage_above_max(tmp_path):
    doc = yaml.safe_load((STRATEGIES_DIR / "futures_1h_btc_eth" / "defs.yaml").read_text())
    doc["attributes"]["futures"]["leverage"] = 10
    p = tmp_path / "defs.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(StrategyConfigError, match=r"attributes\.futures: .*leverage 10(\.0)? exceeds max_leverage 5"):
        load_strategy_file(p)


def test_cross_margin_is_refused_at_load_not_a_label(tmp_path):
    doc = yaml.safe_load((STRATEGIES_DIR / "futures_1h_btc_eth" / "defs.yaml").read_text())
    doc["attributes"]["futures"]["margin_mode"] = "cross"
    p = tmp_path / "defs.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(StrategyConfigError, match=r"attributes\.futures: .*margin_mode 'cross' is not supported: sizing, "
                                                  r"liquidation prices, guards and the paper venue compute isolated margin only"):
        load_strategy_file(p)


@pytest.mark.parametrize("venue", [
    {"kind": "paper"},
    {"kind": "ccxt", "exchange": "binance", "api_key_env": "MY_KEY", "secret_env": "MY_SECRET"},
    {"kind": "webhook", "equity": 25000, "url_env": "HOOK_URL"},
])
def test_one_strategy_file_names_any_venue(tmp_path, venue):
    path = _write(tmp_path, lambda a: a.update(venue=venue))
    spec = load_strategy_file(path)
    assert spec.venue.kind == venue["kind"] and spec.venue.fee_rate == 0.001 and spec.venue.starting_cash == 10_000


def test_bad_strategy_changes_nothing(tmp_path, monkeypatch):
    """A CLI review of an unknown strategy exits 2 before touching the instance or the ledger."""
    from trading_pipelines.cli import main

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    assert main(["review", "no_such_strategy", "--last", "1"]) == 2
    assert main(["review", "spot_4h_majors", "--instruments", "DOGE/USDT"]) == 2
    assert not (tmp_path / "ledger.sqlite").exists()
    assert not (home / "storage").exists()
