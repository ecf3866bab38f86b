"""The cost model of an order, in one place (pure: no Dagster, no I/O).

Everything that prices an entry reads this module, so the numbers agree by construction:

- the PLAN step sizes on the worst price an entry can fill at (:func:`protective_limit`);
- the balance guard (``guards.guard_balance``) asks for :func:`entry_cost` at :func:`cash_price`;
- EXECUTE reserves that same amount with the entry (:func:`entry_reserve`);
- the paper venue fills entries with :func:`entry_fill_price` and checks the funds at the fill
  with :func:`entry_cost` at the fill price.

**Entries are "market with a protective limit"** (CME's *market with protection*, Binance's
``priceProtect``, IBKR's *market-to-limit* cap): a LIMIT order, time in force IOC at the next
bar's open, priced ``max_entry_slippage_pct`` percent beyond the reference price (the last closed
bar's close). A buy fills at the open plus slippage, capped at its limit, if the bar opens at or
below the limit; a bar that gaps above the limit leaves it unfilled and it expires (the opening
trade was its only chance: IOC). Sells mirror that. So the worst price an entry can fill at is its
limit, and a position sized on ``|limit − stop|`` cannot lose more than the planned risk at its
stop, whatever the open does.

Units: prices in quote currency, quantities in base units, ``fee_rate`` a fraction of notional
(0.001 = 0.1 %), ``slippage_bps`` basis points (1 bp = 0.01 %), ``*_pct`` percent (0.5 = 0.5 %).

**Rounding.** The protective limit is rounded to the tick *towards the reference price*: a buy's
limit rounds DOWN, a sell's UP, so the limit never allows more than ``max_entry_slippage_pct``
(a buy at 150.050003 with 0.5 % and a 0.01 tick: 150.80025 → 150.80, not 150.81). Decimal
arithmetic on the decimal prices: 100 × 1.005 is 100.5, not 100.49999999999999.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from trading_pipelines.domain.models import Side

DEFAULT_MAX_ENTRY_SLIPPAGE_PCT = 0.5
"""The default protective band of an entry, percent of the reference price (0.5 %)."""


def _d(x: float) -> Decimal:
    return Decimal(str(x))


def _to_tick(price: Decimal, tick: float | None, up: bool) -> float:
    if not tick:
        return float(price)
    t = _d(tick)
    if t <= 0:
        raise ValueError(f"tick size must be > 0, got {tick}")
    return float((price / t).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR) * t)


def fee(notional: float, fee_rate: float) -> float:
    """The venue's fee on ``notional``. Worked example: 1 000.50 × 0.1 % = 1.0005."""
    return notional * fee_rate


def slipped(price: float, side: Side, slippage_bps: float) -> float:
    """``price`` moved against the trader by ``slippage_bps``: a buy pays more, a sell gets less.
    Worked example: buy at 100 with 5 bps → 100.05; sell → 99.95."""
    k = slippage_bps / 10_000.0
    return price * (1 + k) if side is Side.BUY else price * (1 - k)


def protective_limit(side: Side, reference: float, max_slippage_pct: float = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT,
                     tick_size: float | None = None) -> float:
    """The limit price of a protected entry: ``reference × (1 ± max_slippage_pct / 100)``, a buy's
    rounded DOWN to the tick and a sell's UP (see the module doc), never below one tick.

    Worked examples: buy, reference 100, 0.5 % → 100.5; sell → 99.5. AAPL 2017-08-01 close
    150.050003, buy, 0.5 %, tick 0.01 → 150.80025 → 150.80. SPY 2020-03-12 close 248.11 → 249.35055 → 249.35.
    """
    if not (reference > 0 and math.isfinite(reference)):
        raise ValueError(f"reference price must be a positive number, got {reference}")
    if not (max_slippage_pct >= 0 and math.isfinite(max_slippage_pct)):
        raise ValueError(f"max slippage must be >= 0 %, got {max_slippage_pct}")
    k = _d(max_slippage_pct) / 100
    buy = side is Side.BUY
    raw = _d(reference) * (1 + k if buy else 1 - k)
    if raw <= 0:
        raise ValueError(f"a {max_slippage_pct}% band below {reference} is not a positive price")
    limit = _to_tick(raw, tick_size, up=not buy)
    if tick_size and limit < tick_size:
        limit = tick_size
    return limit


worst_fill_price = protective_limit
"""The worst price a protected entry can fill at is its limit (see :func:`entry_fill_price`)."""


def entry_fill_price(side: Side, open_: float, limit: float, slippage_bps: float) -> float | None:
    """Fill price of a protected (IOC limit) entry at a bar that opens at ``open_``, or None when
    it expires: a buy fills if ``open_ ≤ limit`` at ``min(open_ × (1 + slippage), limit)``; a sell
    if ``open_ ≥ limit`` at ``max(open_ × (1 − slippage), limit)``.

    Worked examples (5 bps): buy, limit 100.5, open 100 → 100.05; open 100.48 → min(100.53, 100.5)
    = 100.5; open 100.6 → None (expired). AAPL 2017-08-02: limit 150.80, open 159.28 → None.
    """
    if side is Side.BUY:
        return min(slipped(open_, side, slippage_bps), limit) if open_ <= limit else None
    return max(slipped(open_, side, slippage_bps), limit) if open_ >= limit else None


def cash_price(side: Side, reference: float, max_slippage_pct: float = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT,
               tick_size: float | None = None) -> float:
    """The price the cash an entry needs is computed at (guard, reservation).

    A buy: its limit, the highest price it can fill at, so the cash it needs at the fill never
    exceeds what the guard asked for and the entry reserved. A sell (a futures short): the mirror
    of the buy's band, ``reference × (1 + max_slippage_pct / 100)`` rounded UP. A short fills at
    any open at or above its limit (a higher open is a better price and a smaller risk to its
    stop), so a short that gaps up by more than the band posts more margin than reserved; the
    venue then checks the margin at the actual fill against the free collateral (the only case in
    which a guarded entry can still be refused for funds). Worked example: reference 100, 0.5 %:
    buy 100.5; sell 100.5.
    """
    if side is Side.BUY:
        return protective_limit(side, reference, max_slippage_pct, tick_size)
    protective_limit(side, reference, max_slippage_pct, tick_size)  # the same checks on the inputs
    return _to_tick(_d(reference) * (1 + _d(max_slippage_pct) / 100), tick_size, up=True)


def entry_cost(quantity: float, price: float, leverage: float, futures: bool, fee_rate: float) -> float:
    """Cash an entry of ``quantity`` at ``price`` takes: spot, the notional plus the fee; futures,
    the initial margin (notional / leverage) plus the fee on the notional.

    Worked examples: spot 10 @ 100.5, 0.1 % → 1 005 + 1.005 = 1 006.005; futures 20 @ 100.5, 5×,
    0.04 % → 2 010 / 5 + 0.804 = 402.804.
    """
    if leverage <= 0:
        raise ValueError(f"leverage must be > 0, got {leverage}")
    notional = quantity * price
    return (notional / leverage if futures else notional) + fee(notional, fee_rate)


def entry_reserve(quantity: float, reference: float, leverage: float, futures: bool, fee_rate: float, *,
                  side: Side = Side.BUY, max_entry_slippage_pct: float = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT,
                  tick_size: float | None = None) -> float:
    """What a resting entry holds back, and what the balance guard asks for: :func:`entry_cost`
    at :func:`cash_price`. Worked example: buy 10 @ reference 100, spot, 0.1 % fee, 0.5 % band →
    price 100.5, notional 1 005, fee 1.005, reserve 1 006.005 (slippage does not add to it: the
    limit caps the fill)."""
    price = cash_price(side, reference, max_entry_slippage_pct, tick_size)
    return entry_cost(quantity, price, leverage, futures, fee_rate)


def worst_case_risk(quantity: float, side: Side, reference: float, stop: float,
                    max_slippage_pct: float = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT, tick_size: float | None = None) -> float:
    """Loss at the stop of ``quantity`` filled at the worst acceptable price (the limit):
    ``quantity × |limit − stop|``. Worked example: buy 245 AAPL, reference 150.050003, stop 146.73,
    0.5 %, tick 0.01 → limit 150.80, 245 × 4.07 = 997.15."""
    limit = protective_limit(side, reference, max_slippage_pct, tick_size)
    return quantity * float(abs(_d(limit) - _d(stop)))


__all__ = ["DEFAULT_MAX_ENTRY_SLIPPAGE_PCT", "cash_price", "entry_cost", "entry_fill_price", "entry_reserve", "fee",
           "protective_limit", "slipped", "worst_case_risk", "worst_fill_price"]
