"""What a strategy's steps share for one book, built once per run: the :class:`Runtime` (the
strategy, the ledger engine, market data, chart store, signal provider and venue), the live
switch, the book ids and the clocks. No Dagster here; analysis (:mod:`trading_pipelines.analysis`)
and the account (:mod:`trading_pipelines.account`) both run on a Runtime."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Engine

from trading_pipelines.config import StrategySpec
from trading_pipelines.domain.guards import RiskLimits
from trading_pipelines.domain.models import InstrumentSpec
from trading_pipelines.domain.planning import PlanParams
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.models import LIVE_BOOK
from trading_pipelines.llm.calls import SignalProvider
from trading_pipelines.stores.charts import ChartStore
from trading_pipelines.stores.market_data import MarketDataSource
from trading_pipelines.venues.protocol import SimulatedVenue, Venue

PROGRESS: list = []
"""Process-local listeners ``fn(done, total)`` told after every account window (the CLI's progress bar)."""

LIVE_SWITCH_ENV = "TRADING_PIPELINES_LIVE"


def live_trading_allowed(strategy: str, dry_run: bool, live_ack: str | None, environ=None) -> tuple[bool, str]:
    """Live orders need all three: ``dry_run: false``, ``live_ack`` equal to the strategy name, and
    ``TRADING_PIPELINES_LIVE=1`` in the deployment. Returns (allowed, reason)."""
    environ = os.environ if environ is None else environ
    if dry_run:
        return False, "dry-run (execution.dry_run is true)"
    if live_ack != strategy:
        return False, f"execution.live_ack must equal {strategy!r} to trade live"
    if environ.get(LIVE_SWITCH_ENV) != "1":
        return False, f"{LIVE_SWITCH_ENV}=1 is not set in this deployment"
    return True, "live trading acknowledged"


@dataclass
class Runtime:
    """Everything a strategy's steps need for one book, built once per run."""

    spec: StrategySpec
    engine: Engine
    market: MarketDataSource
    charts: ChartStore
    provider: SignalProvider | None
    venue: Venue
    book: str = LIVE_BOOK
    book_instruments: tuple[str, ...] | None = None
    frames: object | None = None  # io_managers.FrameStore: indicator chunks as Parquet (None: not stored)
    _reconciled: object = field(default=None, repr=False)  # venue revision at the last reconcile
    _day_start: dict = field(default_factory=dict, repr=False)  # UTC day → that day's starting equity
    _venue_reasons: dict = field(default_factory=dict, repr=False)  # client order id → why the venue ended it
    _rules: dict = field(default_factory=dict, repr=False)  # symbol → the venue's published trading rules

    @property
    def instruments(self) -> tuple[str, ...]:
        """What the book trades: a replay's instruments, or all the strategy's."""
        return self.book_instruments or self.spec.instruments

    @property
    def limits(self) -> RiskLimits:
        r, f = self.spec.risk, self.spec.futures
        return RiskLimits(risk_per_trade_pct=r.risk_per_trade_pct, max_open_positions=r.max_open_positions,
                          max_daily_loss_pct=r.max_daily_loss_pct, max_leverage=f.max_leverage if f else 1.0,
                          fee_rate=self.spec.venue.fee_rate, max_entry_slippage_pct=r.max_entry_slippage_pct)

    @property
    def plan_params(self) -> PlanParams:
        t, r, f = self.spec.template, self.spec.risk, self.spec.futures
        return PlanParams(risk_per_trade_pct=r.risk_per_trade_pct, min_confidence=r.min_confidence,
                          stop_method=t.stop.method, atr_multiple=t.stop.atr_multiple, buffer_atr=t.stop.buffer_atr,
                          take_profit_r=t.take_profit_r, leverage=f.leverage if f else 1.0,
                          margin_mode=f.margin_mode if f else None, min_exit_confidence=r.exit_confidence,
                          max_entry_slippage_pct=r.max_entry_slippage_pct,
                          max_stop_atr=r.max_stop_atr, max_target_r=r.max_target_r)

    def instrument(self, symbol: str) -> InstrumentSpec:
        """The instrument's trading rules: the catalogue's, with lot step, minimum quantity, tick
        size and minimum notional replaced by the venue's own when it publishes them (ccxt's
        ``load_markets``: Binance's LOT_SIZE, PRICE_FILTER and NOTIONAL filters), so a live order
        is sized and priced by the exchange's current rules, not a hand-copied file."""
        spec = self.spec.instrument(symbol)
        rules = getattr(self.venue, "instrument_rules", None)
        if rules is None:
            return spec
        if symbol not in self._rules:
            self._rules[symbol] = rules(symbol)
        return spec.model_copy(update=self._rules[symbol])

    def lineage(self, instrument: str, partition_key: str, run_id: str) -> repo.Lineage:
        return repo.Lineage(self.spec.name, instrument, partition_key, run_id, self.book)



def replay_book_id(spec: StrategySpec, instruments: list[str], first_end: datetime, last_end: datetime) -> str:
    """A replay book is named by what it replays: ``replay-`` + 12 hex of sha256 over the strategy
    (every field), the instruments and the first and last window ends. The same replay of the same
    strategy is the same book (re-running it re-reads its decisions); any change is a new book."""
    raw = json.dumps({"spec": spec.model_dump(mode="json"), "instruments": sorted(instruments),
                      "first": first_end.isoformat(), "last": last_end.isoformat()}, sort_keys=True)
    return "replay-" + hashlib.sha256(raw.encode()).hexdigest()[:12]


WALL_CLOCK = lambda: datetime.now(timezone.utc)  # noqa: E731 - the real venues' "now" (UTC); tests pin it
"""What a real venue's account is at: now, UTC."""


def venue_clock(rt: Runtime) -> datetime | None:
    """The book's clock: a simulated venue's (the last bar it processed), or the wall clock for a
    real venue (its account lives in the present)."""
    return rt.venue.clock() if isinstance(rt.venue, SimulatedVenue) else WALL_CLOCK()



__all__ = ["LIVE_SWITCH_ENV", "PROGRESS", "Runtime", "WALL_CLOCK", "live_trading_allowed", "replay_book_id",
           "venue_clock"]
