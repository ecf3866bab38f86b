"""The schema of a strategy's ``attributes`` block: :class:`StrategySpec` and its parts (``data``,
``template`` with indicators, signal provider and stop, ``risk``, ``futures``, ``schedule``,
``execution``; the ``venue`` block is in :mod:`trading_pipelines.config.venues`). Every model
forbids unknown fields, so a typo is an error, not a silent default. Instruments are checked
against the instrument catalogue (:func:`~trading_pipelines.config.instruments.instrument_catalogue`)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from trading_pipelines.config.base import _Strict
from trading_pipelines.config.instruments import instrument_catalogue
from trading_pipelines.config.venues import PaperVenueConfig, VenueConfig
from trading_pipelines.domain.models import InstrumentSpec, Mode

TIMEFRAMES: dict[str, timedelta] = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1)}
_BAR_CLOSE_CRON = {"1h": "0 * * * *", "4h": "0 */4 * * *", "1d": "0 0 * * *"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,48}$")


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
    max_stop_atr: float = Field(default=5.0, gt=0, le=100, description="a provider's own stop more than this many ATR "
                                "from the last close makes its answer a no-trade (the planner's stop is used regardless)")
    max_target_r: float = Field(default=10.0, gt=0, le=1000, description="a provider's own take-profit more than this "
                                "many R from the last close (R: its stop's distance, else the planner's) makes its "
                                "answer a no-trade")

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
        stop, risk = self.template.stop, self.risk
        if stop.method == "atr" and risk.max_stop_atr < stop.atr_multiple:
            raise ValueError(f"risk.max_stop_atr {risk.max_stop_atr} is below template.stop.atr_multiple "
                             f"{stop.atr_multiple}: a provider's stop at the planner's own distance would be refused")
        if risk.max_target_r < self.template.take_profit_r:
            raise ValueError(f"risk.max_target_r {risk.max_target_r} is below template.take_profit_r "
                             f"{self.template.take_profit_r}: a provider's target at the planner's own would be refused")
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
