"""The instrument catalogues: symbol → :class:`~trading_pipelines.domain.models.InstrumentSpec`
plus the replay ``data_file`` of each symbol.

``TRADING_INSTRUMENTS_PATH`` (``os.pathsep``-separated): more instrument catalogues merged over the
shipped one (or over ``TRADING_INSTRUMENTS_FILE``), later files winning per symbol
(:func:`instruments_files`). An entry's ``data_file`` is relative to the data dir or an absolute
path, ``{timeframe}`` filled in.

A key given twice (a symbol, a field of one entry, ``instruments:`` itself) is an error naming the
file, the line and the key; so is a boolean for a number (``lot_step: yes``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from trading_pipelines.config.base import StrategyConfigError, _format_errors, dotted, read_yaml, refuse_lax_scalars
from trading_pipelines.config.paths import INSTRUMENTS_FILE
from trading_pipelines.domain.models import InstrumentSpec


class InstrumentCatalogueError(StrategyConfigError):
    """An instrument catalogue file is invalid or unreadable. The message names the file, the
    symbol and the field (``<file>: instruments.<SYMBOL>.<field>: <problem>``)."""


def instruments_file() -> Path:
    """``TRADING_INSTRUMENTS_FILE`` if set, else the repo's ``data/instruments.yaml``: the base
    catalogue (``TRADING_INSTRUMENTS_FILE`` replaces the shipped one)."""
    return Path(os.environ.get("TRADING_INSTRUMENTS_FILE") or INSTRUMENTS_FILE)


def instruments_files() -> list[Path]:
    """The catalogue files in merge order: :func:`instruments_file`, then each file of
    ``TRADING_INSTRUMENTS_PATH`` (``os.pathsep``-separated). Later files win per symbol: a symbol
    defined again replaces the whole earlier entry (each entry is complete on its own)."""
    extra = os.environ.get("TRADING_INSTRUMENTS_PATH", "")
    return [instruments_file(), *(Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip())]


def _catalogue_key() -> tuple[tuple[str, int, int, int, int], ...]:
    """(path, mtime_ns, size, ctime_ns, inode) of every catalogue file: the cache key of the merged
    catalogue (the ctime and inode change on every write or replacement, even one that keeps the
    size and restores the mtime)."""
    key = []
    for f in instruments_files():
        try:
            st = f.stat()
        except OSError as e:
            raise InstrumentCatalogueError(f"{f}: cannot read instrument catalogue: {e.strerror or e}") from None
        key.append((str(f), st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino))
    return tuple(key)


def _catalogue_error(path: Path, loc: str, msg: str) -> InstrumentCatalogueError:
    return InstrumentCatalogueError(f"{path}: {loc}: {msg}")


def _read_catalogue_file(path: Path) -> dict[str, tuple[dict, InstrumentSpec]]:
    """Symbol → (raw entry, validated spec) of one catalogue file; raises InstrumentCatalogueError."""
    doc = read_yaml(path, InstrumentCatalogueError, "instrument catalogue")
    if not isinstance(doc, dict) or "instruments" not in doc:
        raise InstrumentCatalogueError(f"{path}: expected an instrument catalogue `instruments: {{SYMBOL: {{...}}}}`")
    for k in doc:
        if k != "instruments":
            raise _catalogue_error(path, str(k), "unknown field (a catalogue has only `instruments:`)")
    if not isinstance(doc["instruments"], dict):
        raise _catalogue_error(path, "instruments", f"expected a mapping SYMBOL → fields (got {type(doc['instruments']).__name__})")
    out: dict[str, tuple[dict, InstrumentSpec]] = {}
    for sym, entry in doc["instruments"].items():
        if not isinstance(sym, str) or not sym.strip():
            raise _catalogue_error(path, "instruments", f"symbol {sym!r} must be a non-empty string")
        loc = f"instruments.{sym}"
        if not isinstance(entry, dict):
            raise _catalogue_error(path, loc, "expected a mapping of fields")
        data_file = entry.get("data_file")
        if data_file is None:
            raise _catalogue_error(path, f"{loc}.data_file", "field required (CSV file relative to the data dir, or an absolute path; may contain {timeframe})")
        if not isinstance(data_file, str) or not data_file.strip():
            raise _catalogue_error(path, f"{loc}.data_file", f"expected a file name or path (got {data_file!r})")
        try:
            data_file.format(timeframe="1h")
        except (KeyError, IndexError, ValueError):
            raise _catalogue_error(path, f"{loc}.data_file", f"{data_file!r}: the only placeholder allowed is {{timeframe}}") from None
        if "symbol" in entry:
            raise _catalogue_error(path, f"{loc}.symbol", "unknown field (the symbol is the entry's key)")
        fields = InstrumentSpec.model_fields
        for name, value in entry.items():
            if name in fields:
                for where, why, got in refuse_lax_scalars(fields[name].annotation, value, (name,)):
                    raise _catalogue_error(path, f"{loc}.{dotted(where)}", f"{why} (got {got!r})")
        try:
            spec = InstrumentSpec(symbol=sym, **{k: v for k, v in entry.items() if k != "data_file"})
        except ValidationError as e:
            raise InstrumentCatalogueError(_format_errors(path, e, loc)) from None
        out[sym] = (dict(entry), spec)
    return out


@lru_cache(maxsize=8)
def _merged_catalogue(key: tuple[tuple[str, int, int, int, int], ...]) -> tuple[dict[str, dict], dict[str, InstrumentSpec]]:
    raw: dict[str, dict] = {}
    specs: dict[str, InstrumentSpec] = {}
    for path, *_stat in key:
        for sym, (entry, spec) in _read_catalogue_file(Path(path)).items():
            raw[sym], specs[sym] = entry, spec
    return raw, specs


def _raw_catalogue() -> dict:
    """Symbol → raw entry of the merged catalogue (shared: do not mutate)."""
    return _merged_catalogue(_catalogue_key())[0]


def _load_catalogue(path: str) -> dict:
    """Raw ``instruments`` mapping of one catalogue file (validated)."""
    return {sym: entry for sym, (entry, _spec) in _read_catalogue_file(Path(path)).items()}


def instrument_catalogue() -> dict[str, InstrumentSpec]:
    """Instrument symbol → :class:`InstrumentSpec`, merged from :func:`instruments_files` (the
    shipped ``data/instruments.yaml`` or ``TRADING_INSTRUMENTS_FILE``, then ``TRADING_INSTRUMENTS_PATH``).
    Cached by the files' paths and stat (mtime, size, ctime, inode). Raises :class:`InstrumentCatalogueError` for a bad file."""
    return dict(_merged_catalogue(_catalogue_key())[1])


def instrument_data_file(symbol: str, timeframe: str) -> str:
    """The replay CSV of ``symbol`` at ``timeframe``: a file name relative to the data dir (e.g.
    ``BINANCE_BTC-USDT_4h.csv``), or an absolute path when the catalogue gives one (``~`` expanded;
    ``{timeframe}`` filled in either way). Raises KeyError for an unknown symbol."""
    raw = _raw_catalogue()
    if symbol not in raw:
        raise KeyError(f"unknown instrument {symbol!r}")
    name = raw[symbol]["data_file"].format(timeframe=timeframe)
    return os.path.expanduser(name) if name.startswith("~") else name
