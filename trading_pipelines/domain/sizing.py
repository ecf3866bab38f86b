"""Position sizing by fixed fractional risk, and futures margin arithmetic.

Rule (the "1 % rule", e.g. Van Tharp, *Trade Your Way to Financial Freedom*, ch. 14):
    quantity = equity × risk_pct / 100 / |entry − stop|, rounded *down* to the lot step,
so that a stop-out loses at most ``risk_pct`` percent of equity (before fees and slippage).

**Sized on the worst fill.** The planner passes as ``entry`` the *worst price the entry can fill
at* — its protective limit (:func:`trading_pipelines.domain.costs.protective_limit`), not the last
close — so the loss at the stop is within ``risk_pct`` whatever the next open does: an open beyond
the limit does not fill at all. This is the fixed-fractional rule with the entry price taken at its
adverse bound (Van Tharp's "R" is the loss from the *actual* entry to the stop; Ralph Vince, *The
Mathematics of Money Management*, 1992, sizes on the largest loss per unit, which for a protected
entry is ``|limit − stop|``). Worked example (AAPL 2017-08-01): equity 100 000, 1 %, close
150.050003, limit 150.80, stop 146.73 → 1 000 / 4.07 = 245.7 → 245 shares (301 when sized on the
close, which risked 3 786.58 at the 159.31 fill of 2017-08-02).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from trading_pipelines.domain.models import PositionSide


def round_down_to_step(quantity: float, step: float) -> float:
    """Largest multiple of ``step`` that is ≤ ``quantity`` (exact decimal arithmetic).

    >>> round_down_to_step(0.123456, 0.001)
    0.123
    """
    if step <= 0:
        raise ValueError(f"lot step must be > 0, got {step}")
    if quantity <= 0:
        return 0.0
    q, s = Decimal(str(quantity)), Decimal(str(step))
    return float((q / s).to_integral_value(rounding=ROUND_DOWN) * s)


def round_to_tick(price: float, tick: float) -> float:
    """``price`` rounded half-up to the nearest multiple of ``tick`` (quote currency)."""
    if tick <= 0:
        raise ValueError(f"tick size must be > 0, got {tick}")
    p, t = Decimal(str(price)), Decimal(str(tick))
    return float((p / t).to_integral_value(rounding=ROUND_HALF_UP) * t)


def risk_position_size(equity: float, risk_pct: float, entry: float, stop: float, lot_step: float) -> float:
    """Base quantity risking ``risk_pct`` percent of ``equity`` between ``entry`` and ``stop``.

    ``equity`` in quote currency, ``risk_pct`` in percent (1.0 = 1 %), prices in quote currency.
    Returns 0.0 when the result rounds below one lot step. Raises ``ValueError`` for non-positive
    equity, risk or prices, or when ``entry == stop`` (infinite size).

    Worked example: equity 10 000 USDT, 1 %, entry 100, stop 95 → 100 / 5 = 20 units.
    """
    if equity <= 0:
        raise ValueError(f"equity must be > 0, got {equity}")
    if risk_pct <= 0:
        raise ValueError(f"risk_pct must be > 0, got {risk_pct}")
    if entry <= 0 or stop <= 0:
        raise ValueError(f"prices must be > 0, got entry={entry} stop={stop}")
    # Decimal arithmetic on the decimal prices: 100.3 − 100.1 is 0.2, not 0.20000000000000284,
    # so an exact lot multiple is not lost to binary float error.
    distance = abs(Decimal(str(entry)) - Decimal(str(stop)))
    if distance == 0:
        raise ValueError("entry equals stop: the stop distance is zero")
    raw = Decimal(str(equity)) * Decimal(str(risk_pct)) / Decimal(100) / distance
    step = Decimal(str(lot_step))
    if step <= 0:
        raise ValueError(f"lot step must be > 0, got {lot_step}")
    return float((raw / step).to_integral_value(rounding=ROUND_DOWN) * step)


def liquidation_price(entry: float, leverage: float, side: PositionSide, maintenance_margin_rate: float) -> float:
    """Approximate isolated-margin liquidation price of a linear (USDT-margined) perpetual.

    long:  entry × (1 − 1/leverage + mmr);   short: entry × (1 + 1/leverage − mmr)
    (Binance USD-M isolated formula with a single maintenance-margin tier and no maintenance
    amount; fees and funding ignored, so the real price is slightly closer to entry.)
    Worked example: long at 100 with 5× and mmr 0.4 % → 100 × (1 − 0.2 + 0.004) = 80.4.
    """
    if leverage < 1:
        raise ValueError(f"leverage must be >= 1, got {leverage}")
    if side is PositionSide.LONG:
        return entry * (1 - 1 / leverage + maintenance_margin_rate)
    return entry * (1 + 1 / leverage - maintenance_margin_rate)
