"""Strategy configuration: the schema of a strategy's ``defs.yaml`` and its loader.

A strategy lives at ``trading_pipelines/defs/strategies/<name>/defs.yaml`` as a Dagster component
(``type: trading_pipelines.components.StrategyComponent``); its ``attributes`` block is validated
by :class:`StrategySpec`. Every model forbids unknown fields, so a typo is an error, not a silent
default. :func:`load_strategy_file` raises :class:`StrategyConfigError` naming the file and the
dotted field path.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trading_pipelines.domain.models import InstrumentSpec, Mode

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
STRATEGIES_DIR = PACKAGE_DIR / "defs" / "strategies"
DEFAULT_DATA_DIR = REPO_DIR / "data" / "ohlcv"
INSTRUMENTS_FILE = REPO_DIR / "data" / "instruments.yaml"

TIMEFRAMES: dict[str, timedelta] = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1)}
_BAR_CLOSE_CRON = {"1h": "0 * * * *", "4h": "0 */4 * * *", "1d": "0 0 * * *"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,48}$")


class StrategyConfigError(ValueError):
    """A strategy file is invalid. The message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PaperVenueConfig(_Strict):
    """The simulated venue. Fees are fractions of notional (0.001 = 0.1 %); slippage in basis points."""

    kind: Literal["paper"] = "paper"
    starting_cash: float = Field(default=10_000.0, gt=0, description="quote currency")
    fee_rate: float = Field(default=0.001, ge=0, lt=0.05)
    slippage_bps: float = Field(default=5.0, ge=0, le=500)


class LiveVenueConfig(_Strict):
    """A real venue. Orders reach it only with ``execution.dry_run: false``, ``live_ack`` set to the
    strategy's name, and ``TRADING_PIPELINES_LIVE=1`` in the deployment's environment."""

    kind: Literal["binance", "ibkr", "webhook"]
    account: str = "default"


VenueConfig = Annotated[PaperVenueConfig | LiveVenueConfig, Field(discriminator="kind")]


class DataConfig(_Strict):
    """Where bars come from and which windows exist.

    ``windows_start``/``windows_end`` bound the time-window partitions (UTC; end exclusive; ``None``
    means open-ended, i.e. up to now). Replay data needs an end, since the files stop.
    """

    source: Literal["replay", "ccxt"] = "replay"
    exchange: str = "binance"
    windows_start: datetime
    windows_end: datetime | None = None

    @field_validator("windows_start", "windows_end")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _order(self) -> "DataConfig":
        if self.windows_end is not None and self.windows_end <= self.windows_start:
            raise ValueError("windows_end must be after windows_start")
        if self.source == "replay" and self.windows_end is None:
            raise ValueError("replay data needs windows_end (the sample files stop)")
        return self


class MacdParams(_Strict):
    fast: int = Field(default=12, ge=2)
    slow: int = Field(default=26, ge=3)
    signal: int = Field(default=9, ge=2)


class WindowParam(_Strict):
    window: int = Field(ge=2, le=500)


class BollingerParams(_Strict):
    window: int = Field(default=20, ge=2, le=500)
    std: float = Field(default=2.0, gt=0, le=5)


class IndicatorConfig(_Strict):
    """Indicator set, computed with the ``ta`` library. Windows are in bars."""

    rsi: WindowParam = WindowParam(window=14)
    macd: MacdParams = MacdParams()
    atr: WindowParam = WindowParam(window=14)
    bollinger: BollingerParams = BollingerParams()
    adx: WindowParam = WindowParam(window=14)
    ema: tuple[int, ...] = (20, 50)
    sma: tuple[int, ...] = (100,)

    @field_validator("ema", "sma")
    @classmethod
    def _windows(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(w < 2 or w > 500 for w in v):
            raise ValueError("moving-average windows must be between 2 and 500 bars")
        return tuple(sorted(set(v)))


class RulesProviderConfig(_Strict):
    kind: Literal["rules"] = "rules"


class OpenAIProviderConfig(_Strict):
    """An OpenAI-compatible chat-completions server. The key and URL come from the environment
    variables named here, never from the file."""

    kind: Literal["openai"] = "openai"
    model: str = "gpt-4o-mini"
    base_url_env: str = "OPENAI_BASE_URL"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=600, ge=50, le=8000)
    timeout_s: float = Field(default=60.0, gt=0)


SignalProviderConfig = Annotated[RulesProviderConfig | OpenAIProviderConfig, Field(discriminator="kind")]


class StopConfig(_Strict):
    """Technical stop: ``atr`` = entry ∓ atr_multiple × ATR; ``swing`` = lowest low (long) or highest
    high (short) of the last ``swing_lookback`` closed bars, pushed out by ``buffer_atr`` × ATR."""

    method: Literal["atr", "swing"] = "atr"
    atr_multiple: float = Field(default=2.0, gt=0, le=20)
    swing_lookback: int = Field(default=20, ge=2, le=500)
    buffer_atr: float = Field(default=0.25, ge=0, le=5)


class TemplateConfig(_Strict):
    indicators: IndicatorConfig = IndicatorConfig()
    signal_provider: SignalProviderConfig = RulesProviderConfig()
    prompt: str | None = Field(default=None, description="Jinja2 template under trading_pipelines/prompts; default per mode")
    stop: StopConfig = StopConfig()
    take_profit_r: float = Field(default=2.0, gt=0, le=20, description="take-profit distance in multiples of the stop distance (R)")
    lookback_bars: int = Field(default=150, ge=30, le=2000, description="bars fed to indicators and the chart")
    chart_bars: int = Field(default=90, ge=20, le=500)


class RiskConfig(_Strict):
    """Risk limits. ``*_pct`` are percent of equity (1.0 = 1 %)."""

    risk_per_trade_pct: float = Field(default=1.0, gt=0, le=10)
    max_open_positions: int = Field(default=3, ge=1, le=100)
    max_daily_loss_pct: float = Field(default=3.0, gt=0, le=100)
    min_confidence: float = Field(default=0.55, ge=0, le=1)


class FuturesConfig(_Strict):
    leverage: float = Field(default=3.0, ge=1, le=125)
    max_leverage: float = Field(default=5.0, ge=1, le=125)
    margin_mode: Literal["isolated", "cross"] = "isolated"

    @model_validator(mode="after")
    def _within(self) -> "FuturesConfig":
        if self.leverage > self.max_leverage:
            raise ValueError(f"leverage {self.leverage} exceeds max_leverage {self.max_leverage}")
        return self


class ScheduleConfig(_Strict):
    cron: str | None = Field(default=None, description="review cron (UTC); default: at each bar close")
    default_running: bool = False


class ExecutionConfig(_Strict):
    """``dry_run`` (default true): live venues receive nothing; the paper venue, being simulated,
    always fills. ``confirm: manual`` leaves validated intents AWAITING_CONFIRMATION."""

    dry_run: bool = True
    confirm: Literal["auto", "manual"] = "auto"
    live_ack: str | None = Field(default=None, description="must equal the strategy name to trade live")


class StrategySpec(_Strict):
    name: str
    description: str = ""
    mode: Mode
    venue: VenueConfig = PaperVenueConfig()
    timeframe: Literal["1h", "4h", "1d"]
    instruments: tuple[str, ...] = Field(min_length=1)
    data: DataConfig
    template: TemplateConfig = TemplateConfig()
    risk: RiskConfig = RiskConfig()
    futures: FuturesConfig | None = None
    schedule: ScheduleConfig = ScheduleConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("name must be lower_snake_case, 2-49 characters, starting with a letter")
        return v

    @field_validator("instruments")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("instruments must be unique")
        return v

    @model_validator(mode="after")
    def _mode_rules(self) -> "StrategySpec":
        if self.venue.kind != "paper":
            raise ValueError(f"venue.kind {self.venue.kind!r} has no adapter yet: only 'paper' can run today")
        if self.mode is Mode.FUTURES and self.futures is None:
            raise ValueError("futures mode needs a `futures` block (leverage, max_leverage, margin_mode)")
        if self.mode is Mode.SPOT and self.futures is not None:
            raise ValueError("spot mode takes no `futures` block")
        catalogue = instrument_catalogue()
        for i, symbol in enumerate(self.instruments):
            spec = catalogue.get(symbol)
            if spec is None:
                raise ValueError(f"instruments[{i}]: unknown instrument {symbol!r} (known: {sorted(catalogue)})")
            if spec.market is not self.mode:
                raise ValueError(f"instruments[{i}]: {symbol!r} is a {spec.market.value} instrument, strategy mode is {self.mode.value}")
        return self

    # ---- derived ----
    @property
    def bar_duration(self) -> timedelta:
        return TIMEFRAMES[self.timeframe]

    @property
    def review_cron(self) -> str:
        return self.schedule.cron or _BAR_CLOSE_CRON[self.timeframe]

    @property
    def instruments_partitions_name(self) -> str:
        return f"{self.name}__instruments"

    @property
    def prompt_template(self) -> str:
        return self.template.prompt or f"{self.mode.value}_review.j2"

    def instrument(self, symbol: str) -> InstrumentSpec:
        return instrument_catalogue()[symbol]


def instruments_file() -> Path:
    """``TRADING_INSTRUMENTS_FILE`` if set, else the repo's ``data/instruments.yaml``."""
    return Path(os.environ.get("TRADING_INSTRUMENTS_FILE") or INSTRUMENTS_FILE)


def _raw_catalogue() -> dict:
    return _load_catalogue(str(instruments_file()))


@lru_cache(maxsize=4)
def _load_catalogue(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())["instruments"]


def instrument_catalogue() -> dict[str, InstrumentSpec]:
    """Instrument symbol → :class:`InstrumentSpec`, from ``data/instruments.yaml``."""
    raw = _raw_catalogue()
    return {
        sym: InstrumentSpec(symbol=sym, **{k: v for k, v in d.items() if k != "data_file"}) for sym, d in raw.items()
    }


def instrument_data_file(symbol: str, timeframe: str) -> str:
    """The replay CSV file name of ``symbol`` at ``timeframe`` (relative to the data dir)."""
    raw = _raw_catalogue()
    if symbol not in raw:
        raise KeyError(f"unknown instrument {symbol!r}")
    return raw[symbol]["data_file"].format(timeframe=timeframe)


def _format_errors(path: Path, err: ValidationError, prefix: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        got = e.get("input")
        got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        lines.append(f"{path}: {loc}: {msg}{got_s}")
    return "\n".join(lines)


def parse_strategy(attributes: dict, path: Path | str = "<strategy>") -> StrategySpec:
    """Validate a strategy's ``attributes`` mapping. Raises :class:`StrategyConfigError`."""
    if not isinstance(attributes, dict):
        raise StrategyConfigError(f"{path}: attributes: expected a mapping")
    try:
        return StrategySpec.model_validate(attributes)
    except ValidationError as e:
        raise StrategyConfigError(_format_errors(Path(path), e, "attributes")) from None


def load_strategy_file(path: Path | str) -> StrategySpec:
    """Read and validate one ``defs.yaml``. Raises :class:`StrategyConfigError` naming file and field."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise StrategyConfigError(f"{path}: cannot read strategy file: {e}") from None
    if not isinstance(doc, dict) or "attributes" not in doc:
        raise StrategyConfigError(f"{path}: expected a component file with `type:` and `attributes:`")
    return parse_strategy(doc["attributes"], path)


def strategy_files(root: Path = STRATEGIES_DIR) -> list[Path]:
    return sorted(root.glob("*/defs.yaml"))


def load_strategies(root: Path = STRATEGIES_DIR) -> dict[str, StrategySpec]:
    """All strategies under ``root`` by name. Duplicate names are an error."""
    out: dict[str, StrategySpec] = {}
    for f in strategy_files(root):
        spec = load_strategy_file(f)
        if spec.name in out:
            raise StrategyConfigError(f"{f}: attributes.name: duplicate strategy name {spec.name!r}")
        out[spec.name] = spec
    return out
