"""Issue 13, done-when: a property test over YAML mutations of the shipped strategy files and the
shipped instrument catalogue. Each mutation (a key duplicated at a random depth, a value replaced
by one of a wrong type, an unknown field added at a random depth) is a load error naming the file
and the dotted field (and the line, for a duplicate), and ``trading-pipelines replay <strategy>
--last 1`` of the mutated file exits 2 with that error and writes nothing: DAGSTER_HOME (run
storage, ledger, paper venue store) is byte-for-byte as before.

The documents mutated: the three shipped strategies as written, each again with every field
spelled out (``StrategySpec.model_dump``), and variants that reach the models the shipped files do
not use (the OpenAI provider with a budget, the ccxt, IBKR and webhook venues);
:func:`test_the_documents_reach_every_model` checks they cover every model of ``StrategySpec``.

Nothing is mocked: real files on TRADING_STRATEGIES_PATH / TRADING_INSTRUMENTS_PATH, the CLI in
process.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shutil
import tempfile
import types
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from trading_pipelines.config import (
    INSTRUMENTS_FILE,
    REPO_DIR,
    STRATEGIES_DIR,
    InstrumentCatalogueError,
    StrategyConfigError,
    StrategySpec,
    instrument_catalogue,
    load_strategy_file,
)
from trading_pipelines.domain.models import InstrumentSpec

SHIPPED = ("spot_4h_majors", "futures_1h_btc_eth", "equities_1d_spy_aapl")
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _shipped(name: str) -> dict:
    return yaml.safe_load((STRATEGIES_DIR / name / "defs.yaml").read_text())


def _full(doc: dict, **attributes) -> dict:
    """``doc`` with ``attributes`` updated and then every field spelled out, defaults included."""
    attrs = {**doc["attributes"], **attributes}
    return {"type": doc["type"], "attributes": StrategySpec.model_validate(attrs).model_dump(mode="json")}


def _documents() -> list[dict]:
    spot, fut, eq = (_shipped(n) for n in SHIPPED)
    openai = {"kind": "openai", "model": "m", "budget": {"max_tokens_per_run": 8000, "max_tokens_per_day": 20000,
                                                         "max_cost_usd_per_day": 1.5}}
    spot_llm = {**spot["attributes"]["template"], "signal_provider": openai}
    return [spot, fut, eq, _full(spot), _full(fut), _full(eq),
            _full(spot, template=spot_llm, venue={"kind": "ccxt", "exchange": "binance"},
                  schedule={"cron": "5 */4 * * *"}, execution={"dry_run": True, "live_ack": "spot_4h_majors"}),
            _full(fut, venue={"kind": "ccxt", "exchange": "binanceusdm", "sandbox": True}),
            _full(eq, venue={"kind": "ibkr", "port": 4002}),
            _full(spot, venue={"kind": "webhook", "equity": 5000})]


DOCUMENTS = _documents()
CATALOGUE = yaml.safe_load(INSTRUMENTS_FILE.read_text())


# ---------------------------------------------------------------- paths into a document

def _mappings(node, path=()):
    """Every mapping of ``node`` (a loaded YAML document), as its key path."""
    if isinstance(node, dict):
        yield path
        for k, v in node.items():
            yield from _mappings(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _mappings(v, (*path, i))


def _values(node, path=()):
    """Every value below the root of ``node``, as its key path."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield (*path, k)
        yield from _values(v, (*path, k))


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _dotted(path) -> str:
    return ".".join(str(p) for p in path)


def _wrong_values(value) -> list:
    """Values of another type than ``value`` that the schema cannot take for it (pydantic's lax
    mode converts a numeric string to a number and an int timestamp to a datetime, so a string is
    offered only for numbers and booleans, never a number for a string)."""
    mapping, sequence = {"wrong": "type"}, ["wrong", "type"]
    if isinstance(value, bool):
        return ["not-a-boolean", 0, 1, 2.5, sequence, mapping]
    if isinstance(value, (int, float)):
        return ["not-a-number", True, False, sequence, mapping]
    if isinstance(value, dict):
        return [sequence, "not-a-mapping", 7]
    if isinstance(value, list):
        return [mapping, 7]
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", value):
        return [sequence, mapping, 2016, "2016"]  # a date: a number would be seconds since 1970
    return [sequence, mapping]  # strings (names, literals) and None (optional fields)


# pydantic names a discriminated union's member in its locations: attributes.venue.paper.fee_rate
_UNION_MEMBER = re.compile(r"\.(venue|signal_provider)\.(paper|ccxt|ibkr|webhook|rules|openai)(?=\.|$)")


def _locations(message: str, path: Path) -> list[str]:
    """The dotted field of each ``<file>: <field>: …`` (or ``<file>:<line>: <field>: …``) line."""
    out = []
    for line in message.splitlines():
        m = re.match(re.escape(str(path)) + r"(?::\d+)?: (\S+?): ", line)
        if m:
            out.append(_UNION_MEMBER.sub(r".\1", m.group(1)))
    return out


def _names(message: str, path: Path, field: str) -> bool:
    """Whether the error ``message`` names ``field`` (or a field inside it) of the file ``path``."""
    return any(loc == field or loc.startswith(field + ".") for loc in _locations(message, path))


# ---------------------------------------------------------------- mutations

def _dump(doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _with_duplicate(doc, mapping_path, key, value, flow: bool) -> str:
    """``doc`` as YAML text whose mapping at ``mapping_path`` gives ``key`` a second time (with ``value``)."""
    rep = yaml.representer.SafeRepresenter(default_flow_style=False, sort_keys=False)
    root = rep.represent_data(doc)
    node = root
    for k in mapping_path:
        node = next(v for kn, v in node.value if kn.value == str(k)) if isinstance(node, yaml.MappingNode) \
            else node.value[k]
    key_node = next(kn for kn, _ in node.value if kn.value == str(key))
    second = yaml.representer.SafeRepresenter(default_flow_style=False, sort_keys=False).represent_data(value)
    node.value.append((yaml.ScalarNode(key_node.tag, key_node.value), second))
    node.flow_style = flow or node.flow_style
    return yaml.serialize(root, Dumper=yaml.SafeDumper, allow_unicode=True)


@st.composite
def _mutation(draw, documents: list[dict], unknown_field_at) -> tuple[str, str, tuple, str]:
    """(kind, YAML text, key path of the field the error must name, the key) of one mutated document."""
    doc = copy.deepcopy(draw(st.sampled_from(documents)))
    kind = draw(st.sampled_from(["duplicate", "wrong_type", "unknown_field"]))
    if kind == "duplicate":
        mapping = draw(st.sampled_from([p for p in _mappings(doc) if _get(doc, p)]))
        key = draw(st.sampled_from(list(_get(doc, mapping))))
        original = _get(doc, (*mapping, key))
        value = draw(st.sampled_from([original, *_wrong_values(original)]))
        return kind, _with_duplicate(doc, mapping, key, value, draw(st.booleans())), (*mapping, key), key
    if kind == "wrong_type":
        path = draw(st.sampled_from(list(_values(doc))))
        parent = _get(doc, path[:-1])
        parent[path[-1]] = draw(st.sampled_from(_wrong_values(parent[path[-1]])))
        return kind, _dump(doc), path, path[-1]
    mapping = draw(st.sampled_from([p for p in _mappings(doc) if unknown_field_at(p)]))
    target = _get(doc, mapping)
    key = draw(st.one_of(st.sampled_from([f"{k}_x" for k in target] or ["zz"]),
                         st.from_regex(r"zz_[a-z]{1,8}", fullmatch=True)))
    target[key] = draw(st.sampled_from([1, "x", None, {"a": 1}, [1]]))
    return kind, _dump(doc), (*mapping, key), key


def _check_duplicate_line(message: str, text: str, key) -> None:
    """The reported lines (``<file>:<line>: … (first given on line <n>)``) both give ``key``."""
    m = re.search(r":(\d+): \S+: duplicate key .* \(first given on line (\d+)\)", message)
    assert m, message
    lines = text.splitlines()
    second, first = int(m.group(1)), int(m.group(2))
    assert first < second or (first == second and lines[first - 1].count(f"{key}:") >= 2)
    for n in (first, second):
        assert re.search(re.escape(str(key)) + r"['\"]?:", lines[n - 1]), (n, lines[n - 1], message)


# ---------------------------------------------------------------- the CLI: refused, nothing written

def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@contextlib.contextmanager
def _env(strategies: Path | None = None, catalogue: Path | None = None):
    """A fresh DAGSTER_HOME (as ``ensure_dagster_home`` leaves it) and the user paths, restored after."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copy(REPO_DIR / "dagster.yaml", home / "dagster.yaml")
        for var in ("TRADING_STRATEGIES_PATH", "TRADING_INSTRUMENTS_PATH", "TRADING_INSTRUMENTS_FILE", "TRADING_LEDGER_URL"):
            mp.delenv(var, raising=False)
        mp.setenv("DAGSTER_HOME", str(home))
        if strategies is not None:
            mp.setenv("TRADING_STRATEGIES_PATH", str(strategies))
        if catalogue is not None:
            mp.setenv("TRADING_INSTRUMENTS_PATH", str(catalogue))
        yield home


def _replay_refused(strategy: str, home: Path, message: str) -> None:
    """``replay <strategy> --last 1 --json`` exits 2 printing ``error: <message>`` and writes nothing."""
    from trading_pipelines.cli import main

    before = _tree(home)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["replay", strategy, "--last", "1", "--json", "--no-charts", "--quiet"])
    assert rc == 2 and out.getvalue() == "", (rc, out.getvalue()[:300], err.getvalue()[-300:])
    assert f"error: {message}" in err.getvalue()
    assert _tree(home) == before


# ---------------------------------------------------------------- the properties

def test_the_documents_load_unmutated(tmp_path):
    """The control: every document mutated below loads as it is (so each error is the mutation's)."""
    for i, doc in enumerate(DOCUMENTS):
        path = tmp_path / f"d{i}" / "defs.yaml"
        path.parent.mkdir()
        path.write_text(_dump(doc))
        assert load_strategy_file(path).name == doc["attributes"]["name"]


def _models(annotation) -> set[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    if origin is not None or isinstance(annotation, types.UnionType):
        return set().union(*(_models(a) for a in typing.get_args(annotation)))
    return set()


def _reachable(model: type[BaseModel]) -> set[type[BaseModel]]:
    out, todo = set(), [model]
    while todo:
        m = todo.pop()
        if m not in out:
            out.add(m)
            todo.extend(x for f in m.model_fields.values() for x in _models(f.annotation))
    return out


def _model_at(doc: dict, path: tuple) -> type[BaseModel] | None:
    """The model that validates the mapping at ``path`` of a strategy document (``None``: not a model)."""
    if path[:1] != ("attributes",):
        return None
    model, node = StrategySpec, doc["attributes"]
    for key in path[1:]:
        node = node[key]
        candidates = _models(model.model_fields[key].annotation)
        if len(candidates) > 1:  # a discriminated union: the member named by `kind`
            candidates = {c for c in candidates if c.model_fields["kind"].default == node.get("kind")
                          or typing.get_args(c.model_fields["kind"].annotation) == (node.get("kind"),)}
        (model,) = candidates
    return model


def test_every_model_forbids_unknown_fields():
    """Every model of a strategy file and of a catalogue entry refuses unknown fields (a typo never
    falls back to a default silently)."""
    models = _reachable(StrategySpec) | {InstrumentSpec}
    assert len(models) >= 20
    assert {m.__name__ for m in models if m.model_config.get("extra") != "forbid"} == set()


def test_the_documents_reach_every_model():
    """The mutated documents hold a mapping for every model of StrategySpec, so an unknown field is
    tried at every depth and in every model."""
    covered = {_model_at(doc, p) for doc in DOCUMENTS for p in _mappings(doc)} - {None}
    assert covered == _reachable(StrategySpec)


@SETTINGS
@given(st.data())
def test_a_mutated_strategy_file_is_a_load_error_and_the_replay_writes_nothing(data):
    kind, text, field_path, key = data.draw(_mutation(DOCUMENTS, lambda p: True))
    name = "mutated_4h"
    with tempfile.TemporaryDirectory() as roots:
        path = Path(roots) / name / "defs.yaml"
        path.parent.mkdir()
        path.write_text(text)
        with _env(strategies=Path(roots)) as home:
            with pytest.raises(StrategyConfigError) as e:
                load_strategy_file(path)
            message = str(e.value)
            assert not isinstance(e.value, InstrumentCatalogueError)
            assert _names(message, path, _dotted(field_path)), (kind, _dotted(field_path), message)
            if kind == "duplicate":
                assert f"duplicate key {key!r}" in message
                _check_duplicate_line(message, text, key)
            _replay_refused(name, home, message.splitlines()[0])


@SETTINGS
@given(st.data())
def test_a_mutated_instrument_catalogue_is_a_load_error_and_the_replay_writes_nothing(data):
    # an added key inside `instruments:` is a new symbol, not an unknown field
    kind, text, field_path, key = data.draw(_mutation([CATALOGUE], lambda p: p != ("instruments",)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instruments.yaml"
        path.write_text(text)
        with _env(catalogue=path) as home:
            with pytest.raises(InstrumentCatalogueError) as e:
                instrument_catalogue()
            message = str(e.value)
            assert _names(message, path, _dotted(field_path)), (kind, _dotted(field_path), message)
            if kind == "duplicate":
                assert f"duplicate key {key!r}" in message
                _check_duplicate_line(message, text, key)
            # every strategy is refused on it, the shipped ones included: nothing runs on a half-read catalogue
            with pytest.raises(InstrumentCatalogueError):
                load_strategy_file(STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml")
            _replay_refused("spot_4h_majors", home, message.splitlines()[0])
