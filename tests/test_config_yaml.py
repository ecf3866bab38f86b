"""Issue 13, config: a duplicate key, a wrong type or an unknown field in a strategy file or an
instrument catalogue is a load error naming the file and the dotted field (and, for a duplicate,
the line), and nothing runs or is written.

PyYAML's ``safe_load`` keeps the last of two equal keys silently: with ``risk_per_trade_pct: 1.0``
and, below it, ``risk_per_trade_pct: 10.0`` an intent risked 999.99 instead of 99.99 (10 % instead
of 1 % of the 10,000 USDT book). Strategy files are read in two places, both covered here: the
project's loader (the CLI, user strategies on ``TRADING_STRATEGIES_PATH``) and Dagster's component
loader (the shipped ``defs/**/defs.yaml``, through :class:`StrategyComponent`).

Nothing is mocked: the files are real files on disk, the CLI runs in process, Dagster's component
loader runs on a real (temporary) defs folder.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from trading_pipelines.config import (
    INSTRUMENTS_FILE,
    REPO_DIR,
    STRATEGIES_DIR,
    InstrumentCatalogueError,
    StrategyConfigError,
    instrument_catalogue,
    load_strategies_report,
    load_strategy_file,
)

SPOT_FILE = STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml"
SPOT_TEXT = SPOT_FILE.read_text()
CATALOGUE_TEXT = INSTRUMENTS_FILE.read_text()


def _line_of(text: str, needle: str, start: int = 1) -> int:
    """1-based number of the first line at or after ``start`` that contains ``needle``."""
    for i, line in enumerate(text.splitlines(), 1):
        if i >= start and needle in line:
            return i
    raise AssertionError(f"{needle!r} not in the text")


def _duplicate_risk_text(name: str) -> str:
    """The shipped spot strategy renamed ``name``, with the issue's second ``risk_per_trade_pct``."""
    text = SPOT_TEXT.replace("name: spot_4h_majors", f"name: {name}")
    return text.replace("    risk_per_trade_pct: 1.0\n", "    risk_per_trade_pct: 1.0\n    risk_per_trade_pct: 10.0\n")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path → (size, mtime_ns). Equal before and after: nothing written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _dagster_home(root: Path) -> Path:
    """A DAGSTER_HOME as ``ensure_dagster_home`` leaves it (the repo's dagster.yaml copied in), so a
    run that started would add its run storage, the ledger and the paper venue's store to it."""
    home = root / "home"
    home.mkdir()
    shutil.copy(REPO_DIR / "dagster.yaml", home / "dagster.yaml")
    return home


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from trading_pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- the case, reproduced first

def test_duplicate_risk_key_is_a_load_error_naming_file_line_and_key(tmp_path):
    path = tmp_path / "dup_4h" / "defs.yaml"
    path.parent.mkdir()
    text = _duplicate_risk_text("dup_4h")
    path.write_text(text)
    first, second = _line_of(text, "risk_per_trade_pct"), _line_of(text, "risk_per_trade_pct: 10.0")
    assert (first, second) == (32, 33)
    # what the old loader made of it: the last value, 10 % of equity (1,000 of a 10,000 USDT book, not 100)
    assert yaml.safe_load(text)["attributes"]["risk"]["risk_per_trade_pct"] == 10.0
    with pytest.raises(StrategyConfigError) as e:
        load_strategy_file(path)
    assert str(e.value) == (f"{path}:33: attributes.risk.risk_per_trade_pct: duplicate key 'risk_per_trade_pct' "
                            f"(first given on line 32)")


def test_cli_replay_of_a_duplicate_key_strategy_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    """The issue's file on TRADING_STRATEGIES_PATH: ``replay`` exits 2 naming file, line and key, and
    DAGSTER_HOME is byte-for-byte as before (no run storage, no ledger, no paper venue store)."""
    roots = tmp_path / "strategies"
    path = roots / "dup_4h_user" / "defs.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(_duplicate_risk_text("dup_4h_user"))
    home = _dagster_home(tmp_path)
    before = _tree(home)
    monkeypatch.setenv("TRADING_STRATEGIES_PATH", str(roots))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("TRADING_LEDGER_URL", raising=False)

    rc, out, err = _cli(["replay", "dup_4h_user", "--last", "1", "--no-charts", "--quiet", "--json"])

    assert rc == 2 and out == ""
    assert f"error: {path}:33: attributes.risk.risk_per_trade_pct: duplicate key 'risk_per_trade_pct'" in err
    assert _tree(home) == before


def test_a_duplicate_key_file_is_skipped_by_the_report_and_the_others_stay(tmp_path):
    (tmp_path / "dup_4h" ).mkdir()
    (tmp_path / "dup_4h" / "defs.yaml").write_text(_duplicate_risk_text("dup_4h"))
    (tmp_path / "good_4h").mkdir()
    (tmp_path / "good_4h" / "defs.yaml").write_text(SPOT_TEXT.replace("name: spot_4h_majors", "name: good_4h"))
    good, errors = load_strategies_report(tmp_path)
    assert list(good) == ["good_4h"]
    assert list(errors) == [str(tmp_path / "dup_4h" / "defs.yaml")]
    assert "duplicate key 'risk_per_trade_pct'" in errors[str(tmp_path / "dup_4h" / "defs.yaml")]


@pytest.mark.parametrize("edit,line_key,dotted", [
    # the same symbol twice: the second entry would replace the first silently
    (lambda t: t.replace("  ETH/USDT:\n", "  BTC/USDT:\n", 1), "  BTC/USDT:", "instruments.BTC/USDT"),
    # a field twice inside one entry
    (lambda t: t.replace("    lot_step: 0.00001\n", "    lot_step: 0.00001\n    lot_step: 1\n", 1), "    lot_step: 1",
     "instruments.BTC/USDT.lot_step"),
    # the top-level key twice: the second `instruments:` would drop every symbol of the first
    (lambda t: t + "instruments:\n  BTC/USDT: {asset_class: crypto, market: spot, data_file: x.csv, lot_step: 1, "
                   "min_qty: 1, tick_size: 1, min_notional: 1}\n", "instruments:", "instruments"),
])
def test_duplicate_key_in_an_instrument_catalogue(tmp_path, monkeypatch, edit, line_key, dotted):
    path = tmp_path / "mine.yaml"
    text = edit(CATALOGUE_TEXT)
    path.write_text(text)
    key = dotted.rsplit(".", 1)[-1]
    first = _line_of(text, line_key.split(":")[0] + ":")
    line = _line_of(text, line_key, first + 1)
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(path))
    with pytest.raises(InstrumentCatalogueError) as e:
        instrument_catalogue()
    assert str(e.value).startswith(f"{path}:{line}: {dotted}: duplicate key {key!r} (first given on line {first})")
    # and every strategy load fails on it, naming the catalogue (nothing runs on a half-read catalogue)
    with pytest.raises(InstrumentCatalogueError, match=f"{path}:{line}: "):
        load_strategy_file(SPOT_FILE)


# ---------------------------------------------------------------- Dagster's component loader

def test_component_loader_refuses_a_duplicate_key(tmp_path):
    """Dagster reads a shipped ``defs.yaml`` with its own YAML loader (last value wins): the
    StrategyComponent re-reads the file through the project's loader and refuses it."""
    from dagster.components.testing import create_defs_folder_sandbox

    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.defs_folder_path / "dup_comp" / "defs.yaml"
        path.parent.mkdir()
        path.write_text(_duplicate_risk_text("dup_comp"))
        with sandbox.build_component_tree() as tree, pytest.raises(Exception) as e:
            tree.load_component(path.parent)
        text = "".join(str(x) for x in _chain(e.value))
        assert f"{path}:33: attributes.risk.risk_per_trade_pct: duplicate key 'risk_per_trade_pct' (first given on line 32)" \
            in text


def test_component_loader_reports_a_refused_boolean_through_dagster():
    """Dagster validates the attributes with StrategySpec first and re-raises pydantic's errors by
    their type name with the file and line: the lax-scalar refusal must use a built-in error type
    (a custom one made Dagster fail with ``KeyError: "Invalid error type: 'wrong_type'"``)."""
    from dagster.components.testing import create_defs_folder_sandbox

    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.defs_folder_path / "lax_comp" / "defs.yaml"
        path.parent.mkdir()
        text = SPOT_TEXT.replace("name: spot_4h_majors", "name: lax_comp").replace("dry_run: true", "dry_run: 0")
        path.write_text(text)
        with sandbox.build_component_tree() as tree, pytest.raises(Exception) as e:
            tree.load_component(path.parent)
        messages = "\n".join(str(x) for x in _chain(e.value))
        assert f"attributes.execution.dry_run at {path}:{_line_of(text, 'dry_run: 0')}" in messages
        assert "expected true or false" in messages


def test_component_loader_builds_the_file_it_was_given():
    """The control: the same folder without the duplicate loads the strategy, at 1 % risk."""
    from dagster.components.testing import create_defs_folder_sandbox

    from trading_pipelines.components import StrategyComponent

    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.defs_folder_path / "one_comp" / "defs.yaml"
        path.parent.mkdir()
        path.write_text(SPOT_TEXT.replace("name: spot_4h_majors", "name: one_comp"))
        with sandbox.build_component_tree() as tree:
            component = tree.load_component(path.parent)
    assert isinstance(component, StrategyComponent)
    assert component.spec.name == "one_comp" and component.spec.risk.risk_per_trade_pct == 1.0


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


# ---------------------------------------------------------------- wrong types pydantic's lax mode converted

def _spot_file(tmp_path: Path, mutate) -> Path:
    doc = yaml.safe_load(SPOT_TEXT)
    mutate(doc["attributes"])
    path = tmp_path / "lax_4h" / "defs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("mutate,field,got", [
    # YAML 1.1 reads yes/on/true as a boolean; pydantic made it 1.0: a 1 % risk from a typo
    (lambda a: a["risk"].update(risk_per_trade_pct=True), "attributes.risk.risk_per_trade_pct", "expected a number, not a boolean (got True)"),
    (lambda a: a["risk"].update(max_open_positions=True), "attributes.risk.max_open_positions", "expected a number, not a boolean (got True)"),
    (lambda a: a["venue"].update(starting_cash=False), "attributes.venue.paper.starting_cash", "expected a number, not a boolean (got False)"),
    (lambda a: a["template"]["indicators"].update(ema=[20, True]), "attributes.template.indicators.ema.1", "expected a number, not a boolean (got True)"),
    # 0, "no", "false", "off" for a boolean: pydantic made them False, i.e. dry_run off
    (lambda a: a["execution"].update(dry_run=0), "attributes.execution.dry_run", "expected true or false (got 0)"),
    (lambda a: a["execution"].update(dry_run="no"), "attributes.execution.dry_run", "expected true or false (got 'no')"),
    (lambda a: a["schedule"].update(default_running="false") if "schedule" in a else a.update(schedule={"default_running": "false"}),
     "attributes.schedule.default_running", "expected true or false (got 'false')"),
])
def test_booleans_and_numbers_are_not_interchangeable(tmp_path, mutate, field, got):
    path = _spot_file(tmp_path, mutate)
    with pytest.raises(StrategyConfigError) as e:
        load_strategy_file(path)
    assert f"{path}: {field}: {got}" in str(e.value)


@pytest.mark.parametrize("value", [2016, "2016", 1451606400])
def test_a_number_is_not_a_date(tmp_path, value):
    """``windows_start: 2016`` was read as 2016 seconds after the epoch: 1970-01-01T00:33:36Z."""
    path = _spot_file(tmp_path, lambda a: a["data"].update(windows_start=value))
    with pytest.raises(StrategyConfigError) as e:
        load_strategy_file(path)
    assert f"{path}: attributes.data.windows_start: expected a date or time like 2026-03-01T00:00:00Z, not a number " \
           f"(seconds since 1970) (got {value!r})" in str(e.value)


def test_numbers_written_as_strings_still_load(tmp_path):
    """YAML 1.1 reads ``1e4`` (no dot) as a string: it stays a number, as pydantic converts it."""
    path = _spot_file(tmp_path, lambda a: a["venue"].update(starting_cash="1e4"))
    assert load_strategy_file(path).venue.starting_cash == 10_000.0


def test_a_boolean_in_a_catalogue_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text(CATALOGUE_TEXT.replace("    min_notional: 5\n", "    min_notional: yes\n", 1))
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(path))
    with pytest.raises(InstrumentCatalogueError) as e:
        instrument_catalogue()
    assert str(e.value) == f"{path}: instruments.BTC/USDT.min_notional: expected a number, not a boolean (got True)"


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(type="trading_pipelines.components.Other"),
     "type: expected trading_pipelines.components.StrategyComponent (got 'trading_pipelines.components.Other')"),
    (lambda d: d.pop("type"), "type: expected trading_pipelines.components.StrategyComponent"),
    # Dagster's post_processing would apply in the UI only, not in the CLI's reading: refused
    (lambda d: d.update(post_processing={"assets": []}), "post_processing: unknown field"),
    (lambda d: d.update(attributes_typo=1), "attributes_typo: unknown field"),
])
def test_the_component_file_has_only_type_and_attributes(tmp_path, edit, message):
    doc = yaml.safe_load(SPOT_TEXT)
    edit(doc)
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(StrategyConfigError) as e:
        load_strategy_file(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_syntax_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "defs.yaml"
    path.write_text(SPOT_TEXT.replace("  risk:\n", "  risk: [\n"))
    with pytest.raises(StrategyConfigError) as e:
        load_strategy_file(path)
    assert str(e.value).startswith(f"{path}: cannot read strategy file: not valid YAML: ")
    assert f'in "{path}", line ' in str(e.value)


def test_merge_keys_override_without_being_duplicates():
    """A key beside a ``<<: *anchor`` merge overrides the merged one (YAML's rule): not a duplicate;
    a key given twice beside the merge still is."""
    from trading_pipelines.config.base import UniqueKeyLoader

    doc = yaml.load("base: &b {a: 1, b: 2}\nother:\n  <<: *b\n  b: 3\n", Loader=UniqueKeyLoader)
    assert doc == {"base": {"a": 1, "b": 2}, "other": {"a": 1, "b": 3}}
    with pytest.raises(yaml.YAMLError, match="duplicate key 'b'"):
        yaml.load("other:\n  <<: {a: 1}\n  b: 3\n  b: 4\n", Loader=UniqueKeyLoader)


def test_a_catalogue_edit_of_the_same_size_and_mtime_is_seen(tmp_path, monkeypatch):
    """The merged catalogue is cached by the files' stat: an edit that keeps the size and the mtime
    (a coarse timestamp tick, or a tool restoring the mtime) still changes the inode's ctime."""
    import os

    path = tmp_path / "mine.yaml"
    entry = "{asset_class: crypto, market: spot, data_file: a.csv, lot_step: %s, min_qty: 0.1, tick_size: 0.0001, min_notional: 5}"
    path.write_text("instruments:\n  ADA/USDT: " + entry % "0.1" + "\n")
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(path))
    assert instrument_catalogue()["ADA/USDT"].lot_step == 0.1
    st = path.stat()
    path.write_text("instruments:\n  ADA/USDT: " + entry % "0.2" + "\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert instrument_catalogue()["ADA/USDT"].lot_step == 0.2
