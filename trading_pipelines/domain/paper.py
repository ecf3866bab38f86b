"""Fill rules of the paper venue, bar by bar. Pure functions over one :class:`Bar`. Prices,
fees and the cash an entry needs come from the one cost model, :mod:`trading_pipelines.domain.costs`.

- Entry (a protective IOC limit, see :mod:`costs`): at the *next* bar's open, a buy fills at the
  open plus slippage capped at its limit if the bar opens at or below the limit, else it expires
  (:func:`entry_fill_price`); sells mirror that.
- Market order (exits): fills at the *next* bar's open, moved against the trader by ``slippage_bps``.
- Limit order: fills when the bar's range reaches the limit; at the open if the bar opens
  through the limit (price improvement), else at the limit.
- Stop (stop-market) order: triggers when the bar's range reaches the trigger; fills at the
  trigger, or at the open if the bar gaps through it, then slippage against the trader.
- Bracket (stop-loss + take-profit on one position): a bar that opens through the target fills
  the take-profit at the open; otherwise, if one bar reaches both, the stop is assumed to fill first. A bar does not say which came first; assuming the worse outcome keeps
  paper results from flattering the strategy (backtrader and freqtrade make the same choice).
Prices in quote currency; ``slippage_bps`` in basis points (1 bp = 0.01 %).
"""

from __future__ import annotations

from trading_pipelines.domain import costs
from trading_pipelines.domain.costs import entry_cost, protective_limit
from trading_pipelines.domain.models import Bar, OrderRole, PositionSide, Side

_slip = costs.slipped


def market_fill_price(side: Side, bar: Bar, slippage_bps: float) -> float:
    """Worked example: buy, open 100, 5 bps → 100.05."""
    return costs.slipped(bar.open, side, slippage_bps)


def entry_fill_price(side: Side, limit: float, bar: Bar, slippage_bps: float) -> float | None:
    """A protective IOC entry at ``bar``'s open (see :func:`costs.entry_fill_price`); None: it expires.
    Worked example: buy, limit 100.5, open 100, 5 bps → 100.05; open 100.6 → None."""
    return costs.entry_fill_price(side, bar.open, limit, slippage_bps)


def bracket_leg_wrong_side(position_side: PositionSide, fill: float, stop: float | None,
                           take_profit: float | None) -> tuple[bool, bool]:
    """Re-anchoring after an entry fill: (stop at or beyond the fill, target at or short of the fill).

    A long's stop must sit below its fill and its target above (a short's the other way). With a
    protective limit the fill is within the band of the planned entry, so this happens only when
    the band is wider than the bracket's distances, or for an unprotected (market) entry. The venue's
    rule (see :mod:`trading_pipelines.venues.paper`): a target on the wrong side is cancelled (it
    would "take profit" at a loss in the bar the position opened); a stop on the wrong side stays
    armed and fills in that bar (the position is already past its invalidation level: exiting at
    once, at the open less slippage, is what the venue's stop order would do).
    Worked example: long filled at 159.31, stop 146.73, target 158.35 → (False, True)."""
    long = position_side is PositionSide.LONG
    bad_stop = stop is not None and (stop >= fill if long else stop <= fill)
    bad_target = take_profit is not None and (take_profit <= fill if long else take_profit >= fill)
    return bad_stop, bad_target


def limit_fill_price(side: Side, limit: float, bar: Bar) -> float | None:
    """Buy limit fills if low ≤ limit, at min(open, limit); sell limit if high ≥ limit, at max(open, limit)."""
    if side is Side.BUY:
        return min(bar.open, limit) if bar.low <= limit else None
    return max(bar.open, limit) if bar.high >= limit else None


def stop_fill_price(side: Side, trigger: float, bar: Bar, slippage_bps: float) -> float | None:
    """Sell stop triggers if low ≤ trigger, fills at min(open, trigger) less slippage;
    buy stop if high ≥ trigger, at max(open, trigger) plus slippage."""
    if side is Side.SELL:
        return _slip(min(bar.open, trigger), side, slippage_bps) if bar.low <= trigger else None
    return _slip(max(bar.open, trigger), side, slippage_bps) if bar.high >= trigger else None


def bracket_exit(
    position_side: PositionSide, stop: float | None, take_profit: float | None, bar: Bar, slippage_bps: float
) -> tuple[OrderRole, float] | None:
    """Which bracket leg ``bar`` fills, and at what price; the stop wins a tie (see module doc)."""
    exit_side = position_side.exit_side
    if take_profit is not None:
        # A bar that *opens* through the target fills the resting limit on the opening trade: the
        # open says which came first, so the stop-first tie rule does not apply.
        long = position_side is PositionSide.LONG
        if (long and bar.open >= take_profit) or (not long and bar.open <= take_profit):
            return OrderRole.TAKE_PROFIT, bar.open
    if stop is not None:
        px = stop_fill_price(exit_side, stop, bar, slippage_bps)
        if px is not None:
            return OrderRole.STOP_LOSS, px
    if take_profit is not None:
        px = limit_fill_price(exit_side, take_profit, bar)
        if px is not None:
            return OrderRole.TAKE_PROFIT, px
    return None


def realized_pnl(position_side: PositionSide, entry: float, exit_price: float, quantity: float) -> float:
    """Gross P&L in quote currency of closing ``quantity`` (fees are booked separately)."""
    sign = 1.0 if position_side is PositionSide.LONG else -1.0
    return sign * (exit_price - entry) * quantity


def entry_reserve(quantity: float, reference_price: float, leverage: float, futures: bool, fee_rate: float,
                  slippage_bps: float = 0.0, *, side: Side = Side.BUY,
                  max_entry_slippage_pct: float = costs.DEFAULT_MAX_ENTRY_SLIPPAGE_PCT,
                  tick_size: float | None = None) -> float:
    """Quote currency a resting entry holds back until it fills: :func:`costs.entry_reserve`, the
    cost at the entry's protective limit (the same number the balance guard asks for). Kept with
    its old positional signature for callers; ``slippage_bps`` no longer matters (the limit caps the
    fill). Worked example: 10 @ 100, spot, 0.1 % fee, 0.5 % band → price 100.5, notional 1005,
    fee 1.005, reserve 1006.005 (was 1012.011 with the old 1 % + 2 × slippage cushion)."""
    return costs.entry_reserve(quantity, reference_price, leverage, futures, fee_rate, side=side,
                               max_entry_slippage_pct=max_entry_slippage_pct, tick_size=tick_size)


__all__ = ["bracket_exit", "bracket_leg_wrong_side", "entry_cost", "entry_fill_price", "entry_reserve",
           "limit_fill_price", "market_fill_price", "protective_limit", "realized_pnl", "stop_fill_price"]
