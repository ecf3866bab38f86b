"""Worked-number tests for domain.guards and domain.calendars.market_hours (pure, no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from trading_pipelines.domain.calendars import market_hours
from trading_pipelines.domain.guards import (
    AccountView,
    MarketHours,
    RiskLimits,
    guard_balance,
    guard_daily_loss,
    guard_duplicate_position,
    guard_fresh_window,
    guard_market_hours,
    guard_min_notional,
    guard_position_exists,
    guard_position_limit,
    guard_risk_limit,
    run_guards,
)
from trading_pipelines.domain.models import (
    InstrumentSpec,
    IntentKind,
    Mode,
    Position,
    PositionSide,
    Side,
    TradeIntent,
)

UTC = timezone.utc
WINDOW_END = datetime(2024, 3, 1, 4, tzinfo=UTC)
OPEN_HOURS = MarketHours(True, "crypto trades 24/7")

BTC = InstrumentSpec(
    symbol="BTC/USDT", asset_class="crypto", market=Mode.SPOT,
    lot_step=0.00001, min_qty=0.00001, tick_size=0.01, min_notional=5.0,
)
BTC_PERP = BTC.model_copy(update={"market": Mode.FUTURES, "maintenance_margin_rate": 0.004})
SPY = InstrumentSpec(
    symbol="SPY", asset_class="equity", market=Mode.SPOT,
    lot_step=1, min_qty=1, tick_size=0.01, min_notional=0.0, calendar="XNYS",
)


def spot_entry(**kw) -> TradeIntent:
    """Spot long: 20 units at 100, stop 95 → risk 20 × 5 = 100, notional = margin = 20 × 100 = 2 000."""
    base = dict(
        intent_id="it-" + "0" * 24, strategy="s", instrument="BTC/USDT", window_end=WINDOW_END, mode=Mode.SPOT,
        kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=20.0, entry=100.0,
        stop=95.0, take_profit=110.0, risk_amount=100.0, notional=2_000.0, margin=2_000.0, equity=10_000.0,
    )
    base.update(kw)
    return TradeIntent(**base)


def futures_entry(side: PositionSide = PositionSide.LONG, **kw) -> TradeIntent:
    """Futures 5×: 20 units at 100 → notional 2 000, margin 2 000 / 5 = 400, risk 20 × 5 = 100.
    Liquidation long 100 × (1 − 0.2 + 0.004) = 80.4; short 100 × (1 + 0.2 − 0.004) = 119.6."""
    long = side is PositionSide.LONG
    base = dict(
        mode=Mode.FUTURES, side=side.entry_side, position_side=side, leverage=5.0, margin_mode="isolated",
        stop=95.0 if long else 105.0, take_profit=110.0 if long else 90.0,
        liquidation_price=80.4 if long else 119.6, margin=400.0,
    )
    base.update(kw)
    return spot_entry(**base)


def exit_intent(instrument: str = "BTC/USDT") -> TradeIntent:
    return TradeIntent(intent_id="it-" + "1" * 24, strategy="s", instrument=instrument, window_end=WINDOW_END,
                       mode=Mode.SPOT, kind=IntentKind.EXIT, entry=100.0)


def pos(instrument: str, side: PositionSide = PositionSide.LONG, qty: float = 0.5) -> Position:
    return Position(instrument=instrument, side=side, quantity=qty, entry_price=100.0, mark_price=100.0,
                    opened_at=WINDOW_END - timedelta(days=1))


def acct(**kw) -> AccountView:
    base = dict(free_cash=10_000.0, equity=10_000.0, day_start_equity=10_000.0)
    base.update(kw)
    return AccountView(**base)


LIMITS = RiskLimits(risk_per_trade_pct=1.0, max_open_positions=3, max_daily_loss_pct=3.0, max_leverage=5.0, fee_rate=0.001)


# --------------------------------------------------------------------------- balance


def test_balance_spot_counts_notional_plus_fee_at_the_protective_limit():
    # the entry is priced at its protective limit 100 × 1.005 = 100.5 (domain.costs), as the venue reserves it:
    # need = 20 × 100.5 = 2 010 + fee 2.01 = 2 012.01
    assert guard_balance(spot_entry(), acct(free_cash=2_012.01), LIMITS).passed
    r = guard_balance(spot_entry(), acct(free_cash=2_012.00), LIMITS)
    assert not r.passed and "2012.01" in r.message and "2012.00" in r.message and "at 100.5" in r.message


def test_balance_spot_fee_tips_it_over():
    # free 2 010 covers the notional at the limit but not the 2.01 fee
    assert not guard_balance(spot_entry(), acct(free_cash=2_010.0), LIMITS).passed
    assert guard_balance(spot_entry(), acct(free_cash=2_010.0), RiskLimits(1.0, 3, 3.0, fee_rate=0.0)).passed


def test_balance_without_slippage_band_is_the_planned_notional():
    # max_entry_slippage_pct 0: need = 2 000 × (1 + 0.001) = 2 002 (the old rule)
    limits = RiskLimits(1.0, 3, 3.0, fee_rate=0.001, max_entry_slippage_pct=0.0)
    assert guard_balance(spot_entry(), acct(free_cash=2_002.0), limits).passed
    assert not guard_balance(spot_entry(), acct(free_cash=2_001.99), limits).passed


def test_balance_futures_counts_margin_plus_fee_on_notional():
    # at the limit 100.5: need = margin 20 × 100.5 / 5 = 402 + notional 2 010 × 0.0004 = 0.804 → 402.804
    limits = RiskLimits(1.0, 3, 3.0, max_leverage=5.0, fee_rate=0.0004)
    assert guard_balance(futures_entry(), acct(free_cash=402.81), limits).passed
    r = guard_balance(futures_entry(), acct(free_cash=402.50), limits)
    assert not r.passed and "402.80" in r.message and "margin" in r.message


def test_balance_futures_short_is_priced_at_the_top_of_the_band():
    # a short's margin grows with its fill price: priced at 100 × 1.005 = 100.5 too → 402.804
    limits = RiskLimits(1.0, 3, 3.0, max_leverage=5.0, fee_rate=0.0004)
    r = guard_balance(futures_entry(PositionSide.SHORT), acct(free_cash=402.80), limits)
    assert not r.passed and "402.80" in r.message
    assert guard_balance(futures_entry(PositionSide.SHORT), acct(free_cash=402.81), limits).passed


def test_balance_futures_does_not_need_the_full_notional():
    # free 1 000 < notional 2 010, but ≥ margin 402 + fee 2.01 (0.1 %)
    assert guard_balance(futures_entry(), acct(free_cash=1_000.0), LIMITS).passed


def test_balance_rounds_the_limit_down_to_the_tick():
    # reference 100.003, 0.5 % → 100.503015 → 100.50 on a 0.01 tick (never above the band)
    it = spot_entry(entry=100.003)
    limits = RiskLimits(1.0, 3, 3.0, fee_rate=0.0)
    assert "at 100.5)" in guard_balance(it, acct(), limits, tick_size=0.01).message
    assert "at 100.503015)" in guard_balance(it, acct(), limits).message


# --------------------------------------------------------------------------- risk_limit


def test_risk_limit_spot_at_and_over_cap():
    # cap = equity 10 000 × 1 % = 100
    assert guard_risk_limit(spot_entry(risk_amount=100.0), acct(), LIMITS).passed
    r = guard_risk_limit(spot_entry(risk_amount=100.01), acct(), LIMITS)
    assert not r.passed and "100.01" in r.message and "100.00" in r.message


def test_risk_limit_uses_the_venue_equity():
    # equity fell to 9 000 → cap 90 < risk 100
    assert not guard_risk_limit(spot_entry(), acct(equity=9_000.0), LIMITS).passed


def test_risk_limit_futures_passes():
    r = guard_risk_limit(futures_entry(), acct(), LIMITS)
    assert r.passed, r.message
    assert guard_risk_limit(futures_entry(PositionSide.SHORT), acct(), LIMITS).passed


def test_risk_limit_futures_leverage_cap():
    # 6× > max 5×
    r = guard_risk_limit(futures_entry(leverage=6.0), acct(), LIMITS)
    assert not r.passed and "leverage 6.0x exceeds max 5.0x" in r.message


@pytest.mark.parametrize("stop", [80.0, 80.4])
def test_risk_limit_futures_long_stop_beyond_liquidation(stop):
    # liquidation 80.4: a stop at or below it would never trigger before liquidation
    r = guard_risk_limit(futures_entry(stop=stop), acct(), LIMITS)
    assert not r.passed and "liquidation" in r.message


@pytest.mark.parametrize("stop", [119.6, 120.0])
def test_risk_limit_futures_short_stop_beyond_liquidation(stop):
    r = guard_risk_limit(futures_entry(PositionSide.SHORT, stop=stop), acct(), LIMITS)
    assert not r.passed and "liquidation" in r.message


def test_risk_limit_futures_without_liquidation_price_fails():
    assert not guard_risk_limit(futures_entry(liquidation_price=None), acct(), LIMITS).passed


# --------------------------------------------------------------------------- daily_loss


def test_daily_loss_exactly_at_limit_fails():
    # day start 10 000, 3 % → cap 300; equity 9 700 → down 300 = cap → no new risk
    r = guard_daily_loss(spot_entry(), acct(equity=9_700.0), LIMITS)
    assert not r.passed and "300.00" in r.message


def test_daily_loss_just_under_limit_passes():
    # down 299.99 < 300
    assert guard_daily_loss(spot_entry(), acct(equity=9_700.01), LIMITS).passed


def test_daily_loss_at_limit_with_float_noise_fails():
    # 12 345.67 × 2.5 % = 308.64175; 12 345.67 − (12 345.67 − 308.64175) = 308.6417500000007 in float
    limits = RiskLimits(1.0, 3, 2.5)
    assert not guard_daily_loss(spot_entry(), acct(day_start_equity=12_345.67, equity=12_345.67 - 308.64175), limits).passed


def test_daily_loss_up_day_passes():
    r = guard_daily_loss(spot_entry(), acct(equity=10_500.0), LIMITS)
    assert r.passed and "+500.00" in r.message


def test_daily_loss_well_over_fails():
    assert not guard_daily_loss(spot_entry(), acct(equity=9_500.0), LIMITS).passed


# --------------------------------------------------------------------------- position_limit


def test_position_limit_counts_positions_and_resting_entries_on_other_instruments():
    limits = RiskLimits(1.0, 2, 3.0)
    # ETH position + SOL resting entry = 2 others ≥ max 2 → a BTC entry would be the 3rd
    r = guard_position_limit(spot_entry(), acct(positions=(pos("ETH/USDT"),), resting_entries=("SOL/USDT",)), limits)
    assert not r.passed and r.message == "2 open of max 2"


def test_position_limit_room_left_passes():
    limits = RiskLimits(1.0, 2, 3.0)
    r = guard_position_limit(spot_entry(), acct(positions=(pos("ETH/USDT"),)), limits)
    assert r.passed and r.message == "1 open of max 2"
    assert guard_position_limit(spot_entry(), acct(), RiskLimits(1.0, 1, 3.0)).passed  # 0 of max 1


def test_position_limit_ignores_the_same_instrument():
    limits = RiskLimits(1.0, 2, 3.0)
    # BTC position and BTC resting entry are not counted for a BTC intent (duplicate guard's job) → 1 of 2
    a = acct(positions=(pos("BTC/USDT"), pos("ETH/USDT")), resting_entries=("BTC/USDT",))
    assert guard_position_limit(spot_entry(), a, limits).passed


def test_position_limit_counts_an_instrument_once():
    # ETH position and ETH resting entry are one instrument → 1 of max 2
    a = acct(positions=(pos("ETH/USDT"),), resting_entries=("ETH/USDT",))
    assert guard_position_limit(spot_entry(), a, RiskLimits(1.0, 2, 3.0)).passed


# --------------------------------------------------------------------------- duplicate_position


def test_duplicate_position_fails_on_a_position():
    r = guard_duplicate_position(spot_entry(), acct(positions=(pos("BTC/USDT", qty=0.5),)), LIMITS)
    assert not r.passed and "long 0.5 BTC/USDT" in r.message


def test_duplicate_position_fails_on_a_resting_entry():
    r = guard_duplicate_position(spot_entry(), acct(resting_entries=("BTC/USDT",)), LIMITS)
    assert not r.passed and "resting entry" in r.message


def test_duplicate_position_passes_with_other_instruments_only():
    a = acct(positions=(pos("ETH/USDT"),), resting_entries=("SOL/USDT",))
    assert guard_duplicate_position(spot_entry(), a, LIMITS).passed


# --------------------------------------------------------------------------- min_notional


def test_min_notional_quantity_below_min_qty():
    # 0.000001 BTC < min qty 0.00001
    r = guard_min_notional(spot_entry(quantity=0.000001, notional=0.03), BTC)
    assert not r.passed and "quantity" in r.message


def test_min_notional_notional_below_minimum():
    # 0.0001 BTC × 30 000 = 3.00 USDT < 5
    r = guard_min_notional(spot_entry(quantity=0.0001, entry=30_000.0, notional=3.0), BTC)
    assert not r.passed and "notional 3.00 below minimum 5.0" in r.message


@pytest.mark.parametrize(("qty", "entry"), [(0.0002, 25_000.0), (0.0002, 30_000.0)])
def test_min_notional_passes_at_and_above_minimum(qty, entry):
    # 0.0002 × 25 000 = 5.00 (exactly the minimum); 0.0002 × 30 000 = 6.00
    assert guard_min_notional(spot_entry(quantity=qty, entry=entry, notional=qty * entry), BTC).passed


# --------------------------------------------------------------------------- market_hours (guard + calendars)


def test_market_hours_guard_mirrors_hours():
    assert guard_market_hours(MarketHours(True, "open")).passed
    r = guard_market_hours(MarketHours(False, "XNYS closed"))
    assert not r.passed and r.message == "XNYS closed"


@pytest.mark.parametrize(
    "window_end",
    [datetime(2017, 6, 3, tzinfo=UTC), datetime(2017, 6, 4, 13, tzinfo=UTC), datetime(2017, 12, 25, tzinfo=UTC)],
)
def test_crypto_is_always_open(window_end):
    # Saturday, Sunday afternoon, Christmas: all open for crypto
    assert market_hours(BTC, window_end, timedelta(hours=4)).open
    assert market_hours(BTC, window_end, timedelta(days=1)).open


def test_spy_friday_daily_bar_is_open_and_queued_for_monday():
    # bar date = 2017-06-03T00:00Z − 1 day = Fri 2017-06-02, an XNYS session; next open Mon 09:30 ET = 13:30Z
    h = market_hours(SPY, datetime(2017, 6, 3, tzinfo=UTC), timedelta(days=1))
    assert h.open
    assert "2017-06-02" in h.message and "2017-06-05T13:30:00+00:00" in h.message


def test_spy_saturday_daily_bar_is_closed():
    # window_end 2017-06-04 → bar date Sat 2017-06-03
    h = market_hours(SPY, datetime(2017, 6, 4, tzinfo=UTC), timedelta(days=1))
    assert not h.open and "2017-06-03" in h.message


def test_spy_independence_day_is_closed():
    # window_end 2017-07-05 → bar date Tue 2017-07-04, a US holiday
    h = market_hours(SPY, datetime(2017, 7, 5, tzinfo=UTC), timedelta(days=1))
    assert not h.open and "2017-07-04" in h.message
    # the next day is a session again
    assert market_hours(SPY, datetime(2017, 7, 6, tzinfo=UTC), timedelta(days=1)).open


def test_spy_intraday_window_uses_the_clock():
    # Fri 2017-06-02 14:30Z = 10:30 ET: open; Sat 2017-06-03 15:00Z: closed
    assert market_hours(SPY, datetime(2017, 6, 2, 14, 30, tzinfo=UTC), timedelta(hours=1)).open
    assert not market_hours(SPY, datetime(2017, 6, 3, 15, tzinfo=UTC), timedelta(hours=1)).open


def test_equity_without_calendar_is_closed():
    h = market_hours(SPY.model_copy(update={"calendar": None}), datetime(2017, 6, 3, tzinfo=UTC), timedelta(days=1))
    assert not h.open and "no exchange calendar" in h.message


# --------------------------------------------------------------------------- fresh_window


def test_fresh_window():
    assert guard_fresh_window(spot_entry(), acct(as_of=None)).passed  # venue has no clock yet
    assert guard_fresh_window(spot_entry(), acct(as_of=WINDOW_END)).passed  # venue is at this window
    assert guard_fresh_window(spot_entry(), acct(as_of=WINDOW_END - timedelta(hours=4))).passed
    r = guard_fresh_window(spot_entry(), acct(as_of=WINDOW_END + timedelta(hours=4)))
    assert not r.passed and "past window" in r.message


# --------------------------------------------------------------------------- position_exists


def test_position_exists():
    assert guard_position_exists(exit_intent(), acct(positions=(pos("BTC/USDT"),))).passed
    assert not guard_position_exists(exit_intent(), acct()).passed
    assert not guard_position_exists(exit_intent(), acct(positions=(pos("ETH/USDT"),))).passed


# --------------------------------------------------------------------------- run_guards

ENTRY_GUARDS = ["fresh_window", "market_hours", "duplicate_position", "position_limit", "balance", "risk_limit",
                "daily_loss", "min_notional"]


def test_run_guards_entry_full_set_all_pass():
    results = run_guards(spot_entry(), BTC, acct(), LIMITS, OPEN_HOURS)
    assert [r.guard for r in results] == ENTRY_GUARDS
    assert all(r.passed for r in results), [r for r in results if not r.passed]


def test_run_guards_futures_entry_all_pass():
    results = run_guards(futures_entry(), BTC_PERP, acct(free_cash=500.0), LIMITS, OPEN_HOURS)
    assert [r.guard for r in results] == ENTRY_GUARDS and all(r.passed for r in results)


def test_run_guards_entry_reports_every_failure():
    # closed market, free cash 100 < 2 002, down 500 today (> 300): three failures, the rest pass
    a = acct(free_cash=100.0, equity=9_500.0)
    results = run_guards(spot_entry(risk_amount=90.0), BTC, a, LIMITS, MarketHours(False, "closed"))
    assert {r.guard for r in results if not r.passed} == {"market_hours", "balance", "daily_loss"}


def test_run_guards_exit_subset_only():
    # an exit is allowed with no cash and past the daily loss limit: only freshness, hours, position
    a = acct(free_cash=0.0, equity=5_000.0, positions=(pos("BTC/USDT"),))
    results = run_guards(exit_intent(), BTC, a, LIMITS, OPEN_HOURS)
    assert [r.guard for r in results] == ["fresh_window", "market_hours", "position_exists"]
    assert all(r.passed for r in results)


def test_run_guards_exit_without_position_fails():
    results = run_guards(exit_intent(), BTC, acct(), LIMITS, OPEN_HOURS)
    assert [r.guard for r in results if not r.passed] == ["position_exists"]


def test_run_guards_no_trade_gets_none():
    no_trade = TradeIntent(intent_id="it-" + "2" * 24, strategy="s", instrument="BTC/USDT", window_end=WINDOW_END,
                           mode=Mode.SPOT, kind=IntentKind.NONE)
    assert run_guards(no_trade, BTC, acct(), LIMITS, MarketHours(False, "closed")) == ()
