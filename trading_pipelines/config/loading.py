"""Reading strategy files: a strategy lives at ``<root>/<name>/defs.yaml`` as a Dagster component
(``type: trading_pipelines.components.StrategyComponent``) whose ``attributes`` block is validated
by :class:`~trading_pipelines.config.spec.StrategySpec`. :func:`load_strategy_file` raises
:class:`~trading_pipelines.config.base.StrategyConfigError` naming the file and the dotted field
path; a key given twice in one mapping, at any depth, is an error naming the file, the line and
the key (plain ``yaml.safe_load`` would keep the last value silently). Dagster's component loader
reads the shipped files itself; :class:`~trading_pipelines.components.StrategyComponent` reads each
again through :func:`load_strategy_file`, so both readings refuse the same files.

``TRADING_STRATEGIES_PATH`` (``os.pathsep``-separated): more strategy folders, each holding
``<name>/defs.yaml`` in the same component format (:func:`strategy_roots`;
:func:`load_strategies_report` skips broken files).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from trading_pipelines.config.base import StrategyConfigError, _format_errors, read_yaml
from trading_pipelines.config.instruments import instrument_catalogue
from trading_pipelines.config.paths import STRATEGIES_DIR
from trading_pipelines.config.spec import StrategySpec


def parse_strategy(attributes: dict, path: Path | str = "<strategy>") -> StrategySpec:
    """Validate a strategy's ``attributes`` mapping. Raises :class:`StrategyConfigError`."""
    if not isinstance(attributes, dict):
        raise StrategyConfigError(f"{path}: attributes: expected a mapping")
    instrument_catalogue()  # a bad catalogue raises InstrumentCatalogueError here, naming its own file
    try:
        return StrategySpec.model_validate(attributes)
    except ValidationError as e:
        raise StrategyConfigError(_format_errors(Path(path), e, "attributes")) from None


COMPONENT_TYPE = "trading_pipelines.components.StrategyComponent"


def load_strategy_file(path: Path | str) -> StrategySpec:
    """Read and validate one ``defs.yaml``: exactly ``type: trading_pipelines.components.StrategyComponent``
    and ``attributes:`` (a :class:`StrategySpec`). Raises :class:`StrategyConfigError` naming the file
    and the dotted field (``<file>: attributes.risk.risk_per_trade_pct: …``), and for a key given
    twice the line too (``<file>:33: attributes.risk.risk_per_trade_pct: duplicate key …``)."""
    path = Path(path)
    doc = read_yaml(path, StrategyConfigError, "strategy file")
    if not isinstance(doc, dict) or "attributes" not in doc:
        raise StrategyConfigError(f"{path}: expected a component file with `type:` and `attributes:`")
    for key in doc:
        if key not in ("type", "attributes"):
            raise StrategyConfigError(f"{path}: {key}: unknown field (a strategy file has only `type:` and `attributes:`)")
    if doc.get("type") != COMPONENT_TYPE:
        got = f" (got {doc['type']!r})" if "type" in doc else ""
        raise StrategyConfigError(f"{path}: type: expected {COMPONENT_TYPE}{got}")
    return parse_strategy(doc["attributes"], path)


def strategy_roots() -> list[Path]:
    """The strategy folders: the shipped :data:`STRATEGIES_DIR` first, then each folder of
    ``TRADING_STRATEGIES_PATH`` (``os.pathsep``-separated) in order, each holding
    ``<name>/defs.yaml``. A folder listed twice (or the shipped one listed again) counts once."""
    roots = [STRATEGIES_DIR]
    seen = {STRATEGIES_DIR.resolve()}
    for entry in os.environ.get("TRADING_STRATEGIES_PATH", "").split(os.pathsep):
        if not entry.strip():
            continue
        root = Path(entry).expanduser()
        if root.resolve() not in seen:
            seen.add(root.resolve())
            roots.append(root)
    return roots


def strategy_files(root: Path | None = STRATEGIES_DIR) -> list[Path]:
    """The ``<name>/defs.yaml`` files under ``root`` (sorted); ``None``: under every :func:`strategy_roots` folder."""
    if root is None:
        return [f for r in strategy_roots() for f in strategy_files(r)]
    return sorted(Path(root).glob("*/defs.yaml"))


def _load(roots: list[Path], *, check_roots: bool, strict: bool) -> tuple[dict[str, StrategySpec], dict[str, str]]:
    """Strategies under ``roots`` and, per broken file (or missing folder), its error. ``strict``
    raises the first error instead. A duplicate name keeps the first file's strategy."""
    out: dict[str, StrategySpec] = {}
    origin: dict[str, Path] = {}
    errors: dict[str, str] = {}

    def fail(key: Path, message: str) -> None:
        if strict:
            raise StrategyConfigError(message)
        errors[str(key)] = message

    for root in roots:
        root = Path(root)
        if check_roots and not root.is_dir():
            fail(root, f"{root}: strategy folder not found (listed in TRADING_STRATEGIES_PATH)")
            continue
        for f in strategy_files(root):
            try:
                spec = load_strategy_file(f)
            except StrategyConfigError as e:
                if strict:
                    raise
                errors[str(f)] = str(e)
                continue
            if spec.name in out:
                fail(f, f"{f}: attributes.name: duplicate strategy name {spec.name!r} (also defined in {origin[spec.name]})")
                continue
            out[spec.name], origin[spec.name] = spec, f
    return out, errors


def load_strategies(root: Path | None = None) -> dict[str, StrategySpec]:
    """All strategies by name: under ``root`` only when given (e.g. ``STRATEGIES_DIR``), else under
    every :func:`strategy_roots` folder. Any broken file, a missing ``TRADING_STRATEGIES_PATH``
    folder or a duplicate name (the error names both files) raises :class:`StrategyConfigError`."""
    if root is not None:
        return _load([Path(root)], check_roots=False, strict=True)[0]
    return _load(strategy_roots(), check_roots=True, strict=True)[0]


def load_strategies_report(roots: Path | list[Path] | None = None) -> tuple[dict[str, StrategySpec], dict[str, str]]:
    """(good strategies by name, error message by broken file path). Like :func:`load_strategies`
    but a broken file is reported and skipped, so the other strategies stay usable; a second file
    with an already-loaded name is reported (naming both files) and the first one kept. ``roots``
    defaults to :func:`strategy_roots` (then a missing env folder is reported under its path)."""
    if roots is None:
        return _load(strategy_roots(), check_roots=True, strict=False)
    if isinstance(roots, (str, Path)):
        roots = [roots]
    return _load([Path(r) for r in roots], check_roots=False, strict=False)
