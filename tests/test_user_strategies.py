"""User strategies and catalogues from the environment, absolute data files, window bounds."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trading_pipelines.config import (
    DEFAULT_DATA_DIR,
    INSTRUMENTS_FILE,
    STRATEGIES_DIR,
    InstrumentCatalogueError,
    StrategyConfigError,
    WindowBoundError,
    instrument_catalogue,
    instrument_data_file,
    instruments_files,
    load_strategies,
    load_strategies_report,
    parse_strategy,
    parse_window_bound,
    strategy_files,
    strategy_roots,
)
from trading_pipelines.stores.market_data import CsvReplaySource

UTC = timezone.utc
SHIPPED = {"spot_4h_majors", "futures_1h_btc_eth", "equities_1d_spy_aapl"}
SPOT_FILE = STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml"
BTC_4H_LINES = (DEFAULT_DATA_DIR / "BINANCE_BTC-USDT_4h.csv").read_text().splitlines()

ADA = {
    "asset_class": "crypto",
    "market": "spot",
    "lot_step": 0.1,
    "min_qty": 0.1,
    "tick_size": 0.0001,
    "min_notional": 5,
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write_yaml(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def strategy_doc(**attrs) -> dict:
    doc = yaml.safe_load(SPOT_FILE.read_text())
    doc["attributes"].update(attrs)
    return doc


@pytest.fixture
def user_env(tmp_path, monkeypatch):
    """A user catalogue adding ADA/USDT (data file: an absolute path to 400 copied BTC 4h rows) and
    a user strategy folder with one strategy trading it."""
    csv = tmp_path / "mydata" / "ADA-USDT_4h.csv"
    csv.parent.mkdir()
    csv.write_text("\n".join(BTC_4H_LINES[:401]) + "\n")  # header + 400 bars, 2025-03-01T00:00Z … 2025-05-06T12:00Z
    catalogue = write_yaml(tmp_path / "my_instruments.yaml", {
        "instruments": {"ADA/USDT": {**ADA, "data_file": str(tmp_path / "mydata" / "ADA-USDT_{timeframe}.csv")}},
    })
    roots = tmp_path / "strategies"
    write_yaml(roots / "ada_4h_user" / "defs.yaml", strategy_doc(
        name="ada_4h_user", instruments=["ADA/USDT"],
        data={"source": "replay", "windows_start": "2025-04-01T00:00:00Z", "windows_end": "2025-05-07T00:00:00Z"},
    ))
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(catalogue))
    monkeypatch.setenv("TRADING_STRATEGIES_PATH", str(roots))
    return {"csv": csv, "catalogue": catalogue, "roots": roots}


# ---------------------------------------------------------------- user strategies


def test_user_strategy_loads_and_replays_its_absolute_data_file(user_env):
    assert strategy_roots() == [STRATEGIES_DIR, user_env["roots"]]
    assert strategy_files(None)[-1] == user_env["roots"] / "ada_4h_user" / "defs.yaml"
    specs = load_strategies()
    assert set(specs) == SHIPPED | {"ada_4h_user"}
    ada = specs["ada_4h_user"]
    assert ada.instruments == ("ADA/USDT",) and ada.instrument("ADA/USDT").lot_step == 0.1

    assert instrument_data_file("ADA/USDT", "4h") == str(user_env["csv"])
    source = CsvReplaySource()  # data_dir is the shipped one; the absolute path wins
    assert source.path_for("ADA/USDT", "4h") == user_env["csv"]
    frame = source.frame("ADA/USDT", "4h")
    assert len(frame) == 400
    assert frame.index[0] == pd.Timestamp("2025-03-01T00:00Z") and frame.index[-1] == pd.Timestamp("2025-05-06T12:00Z")
    bars = source.bars("ADA/USDT", "4h", end=utc(2025, 3, 1, 8), limit=10)
    assert bars["close"].tolist() == [85330.84, 84740.15]  # the first two copied rows
    assert source.last_closed_bar_end("ADA/USDT", "4h") == utc(2025, 5, 6, 16)
    # the shipped instruments still read the shipped data dir
    assert source.path_for("BTC/USDT", "4h") == DEFAULT_DATA_DIR / "BINANCE_BTC-USDT_4h.csv"


def test_explicit_root_loads_only_that_root(user_env):
    assert set(load_strategies(STRATEGIES_DIR)) == SHIPPED
    assert set(load_strategies(user_env["roots"])) == {"ada_4h_user"}
    assert strategy_files() == sorted(STRATEGIES_DIR.glob("*/defs.yaml"))


def test_without_the_env_only_shipped_strategies(monkeypatch):
    monkeypatch.delenv("TRADING_STRATEGIES_PATH", raising=False)
    assert strategy_roots() == [STRATEGIES_DIR]
    assert set(load_strategies()) == SHIPPED


def test_several_strategy_folders_in_order(user_env, tmp_path, monkeypatch):
    second = tmp_path / "more"
    write_yaml(second / "ada_4h_second" / "defs.yaml", strategy_doc(
        name="ada_4h_second", instruments=["ADA/USDT"],
        data={"source": "replay", "windows_start": "2025-04-01T00:00:00Z", "windows_end": "2025-05-07T00:00:00Z"},
    ))
    # the shipped folder listed again counts once (no duplicate-name error)
    monkeypatch.setenv("TRADING_STRATEGIES_PATH", os.pathsep.join([str(user_env["roots"]), "", str(second), str(STRATEGIES_DIR)]))
    assert strategy_roots() == [STRATEGIES_DIR, user_env["roots"], second]
    assert set(load_strategies()) == SHIPPED | {"ada_4h_user", "ada_4h_second"}


def test_broken_user_strategy_is_reported_and_skipped(user_env):
    broken = write_yaml(user_env["roots"] / "broken" / "defs.yaml", strategy_doc(name="broken_one", instruments=["DOGE/USDT"]))
    good, errors = load_strategies_report()
    assert set(good) == SHIPPED | {"ada_4h_user"}
    assert list(errors) == [str(broken)]
    assert errors[str(broken)].startswith(str(broken)) and "unknown instrument 'DOGE/USDT'" in errors[str(broken)]
    # the strict loader refuses, naming the file
    with pytest.raises(StrategyConfigError, match="unknown instrument 'DOGE/USDT'") as e:
        load_strategies()
    assert str(broken) in str(e.value)
    # explicit roots: same report restricted to them
    good, errors = load_strategies_report([user_env["roots"]])
    assert set(good) == {"ada_4h_user"} and list(errors) == [str(broken)]


def test_unreadable_yaml_is_reported(user_env):
    bad = user_env["roots"] / "garbled" / "defs.yaml"
    bad.parent.mkdir()
    bad.write_text("type: x\nattributes: [unclosed\n")
    good, errors = load_strategies_report()
    assert "ada_4h_user" in good and list(errors) == [str(bad)] and "cannot read strategy file" in errors[str(bad)]


def test_duplicate_name_across_folders_names_both_files(user_env):
    copy = write_yaml(user_env["roots"] / "my_spot" / "defs.yaml", strategy_doc())  # still named spot_4h_majors
    with pytest.raises(StrategyConfigError, match="duplicate strategy name 'spot_4h_majors'") as e:
        load_strategies()
    assert str(copy) in str(e.value) and str(SPOT_FILE) in str(e.value)
    good, errors = load_strategies_report()
    assert set(good) == SHIPPED | {"ada_4h_user"} and good["spot_4h_majors"].instruments == ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    assert list(errors) == [str(copy)] and str(SPOT_FILE) in errors[str(copy)]


def test_missing_strategy_folder_is_an_error(user_env, tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    monkeypatch.setenv("TRADING_STRATEGIES_PATH", os.pathsep.join([str(user_env["roots"]), str(missing)]))
    with pytest.raises(StrategyConfigError, match="strategy folder not found"):
        load_strategies()
    good, errors = load_strategies_report()
    assert "ada_4h_user" in good and list(errors) == [str(missing)]


# ---------------------------------------------------------------- catalogues


def test_later_catalogue_overrides_a_symbol(tmp_path, monkeypatch):
    base = yaml.safe_load(INSTRUMENTS_FILE.read_text())["instruments"]
    first = write_yaml(tmp_path / "a.yaml", {"instruments": {"BTC/USDT": {**base["BTC/USDT"], "lot_step": 0.001}}})
    second = write_yaml(tmp_path / "b.yaml", {"instruments": {"BTC/USDT": {**base["BTC/USDT"], "lot_step": 0.01}}})
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", os.pathsep.join([str(first), str(second)]))
    assert instruments_files() == [INSTRUMENTS_FILE, first, second]
    cat = instrument_catalogue()
    assert cat["BTC/USDT"].lot_step == 0.01  # the later file wins
    assert cat["ETH/USDT"].lot_step == 0.0001  # untouched symbols keep the shipped entry
    assert set(cat) == set(base)
    assert load_strategies()["spot_4h_majors"].instrument("BTC/USDT").lot_step == 0.01

    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(first))
    assert instrument_catalogue()["BTC/USDT"].lot_step == 0.001
    monkeypatch.delenv("TRADING_INSTRUMENTS_PATH")
    assert instrument_catalogue()["BTC/USDT"].lot_step == 0.00001


def test_instruments_file_still_replaces_the_shipped_one(tmp_path, monkeypatch):
    only = write_yaml(tmp_path / "only.yaml", {"instruments": {"ADA/USDT": {**ADA, "data_file": "ADA_{timeframe}.csv"}}})
    extra = write_yaml(tmp_path / "extra.yaml", {"instruments": {"XRP/USDT": {**ADA, "data_file": "XRP_{timeframe}.csv"}}})
    monkeypatch.setenv("TRADING_INSTRUMENTS_FILE", str(only))
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(extra))
    assert set(instrument_catalogue()) == {"ADA/USDT", "XRP/USDT"}
    # relative data files stay relative to the data dir
    assert instrument_data_file("XRP/USDT", "1d") == "XRP_1d.csv"
    assert CsvReplaySource(data_dir=tmp_path).path_for("XRP/USDT", "1d") == tmp_path / "XRP_1d.csv"


def test_catalogue_is_reloaded_when_a_file_changes(tmp_path, monkeypatch):
    path = write_yaml(tmp_path / "c.yaml", {"instruments": {"ADA/USDT": {**ADA, "data_file": "a.csv"}}})
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(path))
    assert instrument_catalogue()["ADA/USDT"].lot_step == 0.1
    write_yaml(path, {"instruments": {"ADA/USDT": {**ADA, "lot_step": 1.0, "data_file": "a.csv"}}})
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert instrument_catalogue()["ADA/USDT"].lot_step == 1.0


@pytest.mark.parametrize(("entry", "field", "msg"), [
    ({**ADA, "lot_step": -1, "data_file": "a.csv"}, "instruments.ADA/USDT.lot_step", "greater than 0"),
    ({**ADA, "lot_stepp": 1, "data_file": "a.csv"}, "instruments.ADA/USDT.lot_stepp", "unknown field"),
    ({**ADA, "market": "margin", "data_file": "a.csv"}, "instruments.ADA/USDT.market", "Input should be"),
    (ADA, "instruments.ADA/USDT.data_file", "field required"),
    ({**ADA, "data_file": "ADA_{tf}.csv"}, "instruments.ADA/USDT.data_file", "the only placeholder allowed is {timeframe}"),
    ("not a mapping", "instruments.ADA/USDT", "expected a mapping"),
])
def test_bad_catalogue_names_file_symbol_and_field(tmp_path, monkeypatch, entry, field, msg):
    path = write_yaml(tmp_path / "bad.yaml", {"instruments": {"ADA/USDT": entry}})
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(path))
    with pytest.raises(InstrumentCatalogueError) as e:
        instrument_catalogue()
    text = str(e.value)
    assert text.startswith(f"{path}: {field}") and msg in text
    # a strategy load surfaces the same error (a StrategyConfigError)
    with pytest.raises(StrategyConfigError, match="bad.yaml"):
        load_strategies(STRATEGIES_DIR)


def test_missing_or_shapeless_catalogue_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(tmp_path / "absent.yaml"))
    with pytest.raises(InstrumentCatalogueError, match=r"absent\.yaml: cannot read instrument catalogue"):
        instrument_catalogue()
    flat = write_yaml(tmp_path / "flat.yaml", {"ADA/USDT": ADA})
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(flat))
    with pytest.raises(InstrumentCatalogueError, match=r"flat\.yaml: expected an instrument catalogue"):
        instrument_catalogue()


# ---------------------------------------------------------------- window bounds


def spec_with(timeframe: str, start: str, end: str):
    attrs = yaml.safe_load(SPOT_FILE.read_text())["attributes"]
    attrs.update(timeframe=timeframe, data={"source": "replay", "windows_start": start, "windows_end": end})
    return parse_strategy(attrs)


@pytest.fixture(scope="module")
def spec_4h():
    return spec_with("4h", "2024-10-01T00:00:00Z", "2025-01-01T00:00:00Z")


@pytest.mark.parametrize("value", [
    "2024-11-01T04:00Z", "2024-11-01T04:00:00+00:00", "2024-11-01T04:00:00Z", "2024-11-01-04:00",
    "2024-11-01T04:00",  # naive: UTC
    "2024-11-01T06:00+02:00",  # the same instant in CEST
    "2024-11-01 04:00:00",
])
def test_window_bound_on_the_4h_grid(spec_4h, value):
    assert parse_window_bound(spec_4h, value) == utc(2024, 11, 1, 4)


def test_window_bound_date_and_range_edges(spec_4h):
    assert parse_window_bound(spec_4h, "2024-11-01") == utc(2024, 11, 1)
    assert parse_window_bound(spec_4h, "2024-10-01") == utc(2024, 10, 1)  # windows_start
    assert parse_window_bound(spec_4h, "2024-12-31T20:00Z", what="--end") == utc(2024, 12, 31, 20)  # last window


def test_window_bound_off_the_grid_names_the_nearest_boundaries(spec_4h):
    with pytest.raises(WindowBoundError) as e:
        parse_window_bound(spec_4h, "2024-11-01T05:00Z")
    text = str(e.value)
    assert text.startswith("--start '2024-11-01T05:00Z'")
    assert "4h" in text and "nearest boundaries: 2024-11-01T04:00Z and 2024-11-01T08:00Z" in text
    assert "valid range: 2024-10-01T00:00Z … 2024-12-31T20:00Z" in text
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(("value", "nearest"), [
    ("2024-09-30T20:00Z", "2024-10-01T00:00Z"),
    ("2025-01-01", "2024-12-31T20:00Z"),  # windows_end is exclusive: its window would end after it
    ("2026-03-01-00:00", "2024-12-31T20:00Z"),
])
def test_window_bound_outside_the_range(spec_4h, value, nearest):
    with pytest.raises(WindowBoundError) as e:
        parse_window_bound(spec_4h, value, what="--end")
    text = str(e.value)
    assert text.startswith(f"--end {value!r} is outside the 4h windows")
    assert "valid range: 2024-10-01T00:00Z … 2024-12-31T20:00Z" in text and f"nearest window start: {nearest}" in text


def test_window_bound_1d():
    eq = load_strategies(STRATEGIES_DIR)["equities_1d_spy_aapl"]
    assert parse_window_bound(eq, "2017-03-15") == utc(2017, 3, 15)
    assert parse_window_bound(eq, "2017-03-15T00:00:00Z") == utc(2017, 3, 15)
    with pytest.raises(WindowBoundError, match=r"1d .*nearest boundaries: 2017-03-15 and 2017-03-16; valid range: 2016-01-01 … 2018-01-19"):
        parse_window_bound(eq, "2017-03-15T12:00Z")
    with pytest.raises(WindowBoundError, match=r"nearest boundaries: 2017-03-14 and 2017-03-15"):
        parse_window_bound(eq, "2017-03-15T01:00+02:00")  # 2017-03-14T23:00Z


def test_window_bound_1h_and_garbage():
    fut = load_strategies(STRATEGIES_DIR)["futures_1h_btc_eth"]
    assert parse_window_bound(fut, "2026-02-01T05:00Z") == utc(2026, 2, 1, 5)
    with pytest.raises(WindowBoundError, match=r"nearest boundaries: 2026-02-01T05:00Z and 2026-02-01T06:00Z"):
        parse_window_bound(fut, "2026-02-01T05:30Z")
    with pytest.raises(WindowBoundError, match=r"--start 'yesterday': not a date or datetime of a 1h window"):
        parse_window_bound(fut, "yesterday")
