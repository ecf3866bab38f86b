"""Strategy configuration: the schema of a strategy's ``defs.yaml`` and its loader.

A strategy lives at ``trading_pipelines/defs/strategies/<name>/defs.yaml`` as a Dagster component
(``type: trading_pipelines.components.StrategyComponent``); its ``attributes`` block is validated
by :class:`StrategySpec`. Every model forbids unknown fields, so a typo is an error, not a silent
default. :func:`load_strategy_file` raises :class:`StrategyConfigError` naming the file and the
dotted field path.

User additions, from the environment (both ``os.pathsep``-separated):

* ``TRADING_STRATEGIES_PATH``: more strategy folders, each holding ``<name>/defs.yaml`` in the same
  component format (:func:`strategy_roots`; :func:`load_strategies_report` skips broken files).
* ``TRADING_INSTRUMENTS_PATH``: more instrument catalogues merged over the shipped one (or over
  ``TRADING_INSTRUMENTS_FILE``), later files winning per symbol (:func:`instruments_files`). An
  entry's ``data_file`` is relative to the data dir or an absolute path, ``{timeframe}`` filled in.
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


class _VenueCosts(_Strict):
    """What every venue config carries: the cost model of its replays and guards. ``fee_rate`` a
    fraction of notional (0.001 = 0.1 %); ``slippage_bps`` basis points; ``starting_cash`` the quote
    currency a replay book (always simulated) starts from."""

    starting_cash: float = Field(default=10_000.0, gt=0, description="quote currency")
    fee_rate: float = Field(default=0.001, ge=0, lt=0.05)
    slippage_bps: float = Field(default=5.0, ge=0, le=500)


class PaperVenueConfig(_VenueCosts):
    """The simulated venue (every replay book uses it, whatever the live venue is)."""

    kind: Literal["paper"] = "paper"


class CcxtVenueConfig(_VenueCosts):
    """A ccxt exchange: ``binance`` (spot) or ``binanceusdm`` (USDⓈ-M perpetuals). The API key and
    secret come from the environment variables named here, never from the file. ``sandbox``:
    ccxt's testnet URLs."""

    kind: Literal["ccxt"]
    exchange: Literal["binance", "binanceusdm"]
    api_key_env: str = "BINANCE_API_KEY"
    secret_env: str = "BINANCE_SECRET"
    sandbox: bool = False
    account: str = "default"


class IbkrVenueConfig(_VenueCosts):
    """Interactive Brokers through ib_async: TWS or IB Gateway at ``host``:``port`` (Gateway 4002
    paper / 4001 live; TWS 7497 / 7496). ``client_id`` fixed per deployment (orders re-bind after a
    restart) and unique per connection; ``account`` the IB account code (empty: the only one)."""

    kind: Literal["ibkr"]
    host: str = "127.0.0.1"
    port: int = Field(default=4002, ge=1, le=65535)
    client_id: int = Field(default=17, ge=0)
    account: str = ""
    connect_timeout_s: float = Field(default=10.0, gt=0)


class WebhookVenueConfig(_VenueCosts):
    """Orders POSTed as signed JSON (HMAC-SHA256 over ``timestamp.body`` with the secret from
    ``secret_env``) to the URL in ``url_env`` (a URL may carry a token: it is read from the
    environment too). Fire and forget: a 2xx is SENT, nothing is monitored; ``equity`` is the quote
    currency the sizing uses (a webhook reports no balance)."""

    kind: Literal["webhook"]
    url_env: str = "TRADING_WEBHOOK_URL"
    secret_env: str = "TRADING_WEBHOOK_SECRET"
    equity: float = Field(gt=0, description="quote currency the 1 % sizing is computed on")
    timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    account: str = "default"


VenueConfig = Annotated[PaperVenueConfig | CcxtVenueConfig | IbkrVenueConfig | WebhookVenueConfig,
                        Field(discriminator="kind")]


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


class BudgetConfig(_Strict):
    """Token and estimated-cost limits of the provider's HTTP calls (cache hits are free). Per run
    (the run id's calls of this strategy) and per strategy per UTC day (the day a call was made).
    Checked before each call: once the tokens (or cost) used reach a limit, no call is made and the
    window is a recorded no-trade ``budget: …``. ``None``: no limit."""

    max_tokens_per_run: int | None = Field(default=None, ge=1)
    max_tokens_per_day: int | None = Field(default=None, ge=1)
    max_cost_usd_per_day: float | None = Field(default=None, gt=0)

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.max_tokens_per_run, self.max_tokens_per_day, self.max_cost_usd_per_day))


class OpenAIProviderConfig(_Strict):
    """An OpenAI-compatible chat-completions server. The key and URL come from the environment
    variables named here, never from the file."""

    kind: Literal["openai"] = "openai"
    model: str = "gpt-4o-mini"
    base_url_env: str = "OPENAI_BASE_URL"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=600, ge=50, le=8000)
    timeout_s: float = Field(default=60.0, gt=0, description="seconds per HTTP attempt")
    max_retries: int = Field(default=2, ge=0, le=10, description="SDK retries of 408/409/429/5xx and connection errors "
                             "(exponential back-off with jitter, honours Retry-After); other 4xx are never retried")
    retry_timeouts: bool = Field(default=False, description="retry a timed-out attempt too (off: a one-request-at-a-time "
                                 "local server would still be computing the abandoned attempt)")
    send_chart: bool = Field(default=True, description="attach the chart image (false for text-only models)")
    image_detail: Literal["auto", "low", "high"] | None = Field(default=None, description="image_url detail; None omits "
                                                                "the key (vLLM rejects it)")
    response_format: Literal["json_schema", "llamacpp_schema", "json_object", "none"] = Field(
        default="json_schema", description="json_schema: OpenAI strict structured output; llamacpp_schema: llama.cpp's "
        "{type: json_object, schema}; json_object: JSON mode; none: no response_format. Refusals step down automatically")
    reasoning: bool = Field(default=False, description="reasoning model: max_completion_tokens instead of max_tokens, "
                            "no temperature")
    min_prompt_tokens: int = Field(default=50, ge=0, description="a reported prompt_tokens below this means the server "
                                   "dropped or truncated the prompt: no trade")
    max_entry_deviation_pct: float = Field(default=2.0, gt=0, le=100, description="the model's entry must be within this "
                                           "percent of the last close, else no trade")
    max_concurrent_calls: int = Field(default=4, ge=1, le=64, description="provider calls of one analysis (an "
                                      "instrument's windows) in flight at once; 1: serial")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="token and cost limits (see BudgetConfig)")


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
    min_exit_confidence: float | None = Field(default=None, ge=0, le=1, description="minimum confidence of a sell/close "
                                              "signal; None: min_confidence")
    max_entry_slippage_pct: float = Field(default=0.5, ge=0, le=10, description="entries are limit orders this percent "
                                          "beyond the last close (the protective limit), filled at the next open or expired; "
                                          "the size is computed at that limit, so the risk at any fill is at most the planned risk")

    @property
    def exit_confidence(self) -> float:
        """The minimum confidence an exit signal needs (``min_exit_confidence``, else ``min_confidence``)."""
        return self.min_confidence if self.min_exit_confidence is None else self.min_exit_confidence


class FuturesConfig(_Strict):
    leverage: float = Field(default=3.0, ge=1, le=125)
    max_leverage: float = Field(default=5.0, ge=1, le=125)
    margin_mode: Literal["isolated", "cross"] = "isolated"

    @model_validator(mode="after")
    def _within(self) -> "FuturesConfig":
        if self.margin_mode == "cross":
            # refused rather than a label: sizing, the liquidation price, the stop-before-liquidation
            # guard and the paper venue all compute isolated margin (per position); cross margin
            # (wallet-backed, Binance's cross liquidation over all positions) is not implemented
            raise ValueError("margin_mode 'cross' is not supported: sizing, liquidation prices, guards and the paper venue "
                             "compute isolated margin only; use margin_mode: isolated")
        if self.leverage > self.max_leverage:
            raise ValueError(f"leverage {self.leverage} exceeds max_leverage {self.max_leverage}")
        return self


class ScheduleConfig(_Strict):
    cron: str | None = Field(default=None, description="review cron (UTC); default: at each bar close")
    default_running: bool = False


class ExecutionConfig(_Strict):
    """``dry_run`` (default true): live venues receive nothing; the paper venue, being simulated,
    always fills. ``confirm: manual`` leaves validated intents AWAITING_CONFIRMATION.
    ``protection``: what the execution engine does with an open position of an intent when no
    reduce-only stop can rest for its whole quantity (the venue refused it): ``flatten`` (default)
    closes it with a reduce-only market order and audits why; ``flag`` leaves it open, marks the
    intent UNPROTECTED and fails the ``positions_protected`` check (a human is paged)."""

    dry_run: bool = True
    confirm: Literal["auto", "manual"] = "auto"
    live_ack: str | None = Field(default=None, description="must equal the strategy name to trade live")
    protection: Literal["flatten", "flag"] = "flatten"


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
        v = self.venue
        if v.kind == "ccxt" and (v.exchange == "binanceusdm") != (self.mode is Mode.FUTURES):
            raise ValueError(f"venue.exchange {v.exchange!r} trades {'futures' if v.exchange == 'binanceusdm' else 'spot'}, "
                             f"strategy mode is {self.mode.value} (binance: spot, binanceusdm: futures)")
        if v.kind == "ibkr" and self.mode is not Mode.SPOT:
            raise ValueError("venue.kind 'ibkr' trades equities here: spot mode only")
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


def _catalogue_key() -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of every catalogue file: the cache key of the merged catalogue."""
    key = []
    for f in instruments_files():
        try:
            st = f.stat()
        except OSError as e:
            raise InstrumentCatalogueError(f"{f}: cannot read instrument catalogue: {e.strerror or e}") from None
        key.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(key)


def _catalogue_error(path: Path, loc: str, msg: str) -> InstrumentCatalogueError:
    return InstrumentCatalogueError(f"{path}: {loc}: {msg}")


def _read_catalogue_file(path: Path) -> dict[str, tuple[dict, InstrumentSpec]]:
    """Symbol → (raw entry, validated spec) of one catalogue file; raises InstrumentCatalogueError."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise InstrumentCatalogueError(f"{path}: cannot read instrument catalogue: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise InstrumentCatalogueError(f"{path}: instrument catalogue is not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("instruments"), dict):
        raise InstrumentCatalogueError(f"{path}: expected an instrument catalogue `instruments: {{SYMBOL: {{...}}}}`")
    for k in doc:
        if k != "instruments":
            raise _catalogue_error(path, str(k), "unknown field (a catalogue has only `instruments:`)")
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
        try:
            spec = InstrumentSpec(symbol=sym, **{k: v for k, v in entry.items() if k != "data_file"})
        except ValidationError as e:
            raise InstrumentCatalogueError(_format_errors(path, e, loc)) from None
        out[sym] = (dict(entry), spec)
    return out


@lru_cache(maxsize=8)
def _merged_catalogue(key: tuple[tuple[str, int, int], ...]) -> tuple[dict[str, dict], dict[str, InstrumentSpec]]:
    raw: dict[str, dict] = {}
    specs: dict[str, InstrumentSpec] = {}
    for path, _mtime, _size in key:
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
    Cached by the files' paths and mtimes. Raises :class:`InstrumentCatalogueError` for a bad file."""
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


# ---------------------------------------------------------------- window bounds


class WindowBoundError(ValueError):
    """A ``--start``/``--end`` value is not a window start of the strategy. The message names the
    flag, the value, the timeframe, the nearest window starts and the valid range."""


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LEGACY_KEY_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})-(\d{2}):(\d{2})$")
_GRID = {"1h": "windows start on every UTC hour", "4h": "windows start every 4 hours from 00:00 UTC",
         "1d": "windows start at midnight UTC"}


def _floor(ts: datetime, bar: timedelta) -> datetime:
    return _EPOCH + ((ts - _EPOCH) // bar) * bar


def _ceil(ts: datetime, bar: timedelta) -> datetime:
    lo = _floor(ts, bar)
    return lo if lo == ts else lo + bar


def _fmt_bound(ts: datetime, timeframe: str) -> str:
    return ts.strftime("%Y-%m-%d") if timeframe == "1d" else ts.strftime("%Y-%m-%dT%H:%MZ")


def window_range(spec: StrategySpec, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(first, last) window start (UTC) of ``spec``, as the window partitions have them: the first
    boundary at or after ``data.windows_start`` and the last whose window ends by ``data.windows_end``
    (exclusive end; ``now`` when open-ended). ``last < first`` means there is no window."""
    bar = spec.bar_duration
    end = spec.data.windows_end or (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return _ceil(spec.data.windows_start, bar), _floor(end, bar) - bar


def _parse_instant(value: str) -> datetime | None:
    v = value.strip()
    m = _LEGACY_KEY_RE.match(v)
    if m:
        v = f"{m[1]}T{m[2]}:{m[3]}"
    if v[-1:] == "z":
        v = v[:-1] + "Z"
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def parse_window_bound(spec: StrategySpec, value: str | datetime, *, what: str = "--start") -> datetime:
    """``value`` as the UTC start of one of ``spec``'s windows.

    Accepts ISO-8601 dates and datetimes (``2024-11-01``, ``2024-11-01T04:00Z``,
    ``2024-11-01T04:00:00+00:00``; naive values are UTC) and the partition key format
    ``2024-11-01-04:00``. The instant must lie on the timeframe's grid (1h/4h: a multiple of the bar
    from the UTC epoch; 1d: midnight UTC) and within :func:`window_range`. Otherwise raises
    :class:`WindowBoundError` naming ``what`` (the flag), the value, the timeframe, the nearest
    window starts and the valid range.
    """
    tf, bar = spec.timeframe, spec.bar_duration
    first, last = window_range(spec)
    valid = (f"valid range: {_fmt_bound(first, tf)} … {_fmt_bound(last, tf)}" if last >= first
             else f"{spec.name} has no windows yet (data.windows_start {_fmt_bound(spec.data.windows_start, tf)})")
    if isinstance(value, datetime):
        dt = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    else:
        dt = _parse_instant(str(value))
    if dt is None:
        raise WindowBoundError(
            f"{what} {value!r}: not a date or datetime of a {tf} window (use ISO-8601 UTC, e.g. "
            f"{_fmt_bound(first, tf)}{'' if tf == '1d' else ' or ' + first.strftime('%Y-%m-%d-%H:%M')}); {valid}")
    lo = _floor(dt, bar)
    if lo != dt:
        raise WindowBoundError(
            f"{what} {value!r} is not a window boundary of {spec.name}'s {tf} timeframe ({_GRID[tf]}); "
            f"nearest boundaries: {_fmt_bound(lo, tf)} and {_fmt_bound(lo + bar, tf)}; {valid}")
    if last < first or not first <= dt <= last:
        nearest = "" if last < first else f"; nearest window start: {_fmt_bound(first if dt < first else last, tf)}"
        raise WindowBoundError(f"{what} {value!r} is outside the {tf} windows of {spec.name}; {valid}{nearest}")
    return dt

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
    instrument_catalogue()  # a bad catalogue raises InstrumentCatalogueError here, naming its own file
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
