"""Fill rules of the paper venue, bar by bar. Pure functions over one :class:`Bar`.

- Market order: fills at the *next* bar's open, moved against the trader by ``slippage_bps``.
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

from trading_pipelines.domain.models import Bar, OrderRole, PositionSide, Side


def _slip(price: float, side: Side, slippage_bps: float) -> float:
    k = slippage_bps / 10_000.0
    return price * (1 + k) if side is Side.BUY else price * (1 - k)


def market_fill_price(side: Side, bar: Bar, slippage_bps: float) -> float:
    """Worked example: buy, open 100, 5 bps → 100.05."""
    return _slip(bar.open, side, slippage_bps)


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
                  slippage_bps: float) -> float:
    """Quote currency a resting market entry holds back until it fills at an unknown open: the
    cost (spot notional, futures initial margin, plus the fee) at the reference price moved up by
    twice the slippage and a 1 % gap cushion. Worked example: 10 @ 100, spot, 0.1 % fee, 5 bps →
    price 101.1, notional 1011, fee 1.011, reserve 1012.011."""
    price = reference_price * (1 + 2 * slippage_bps / 10_000 + 0.01)
    notional = quantity * price
    return (notional / leverage if futures else notional) + notional * fee_rate
