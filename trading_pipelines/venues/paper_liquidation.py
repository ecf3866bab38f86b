"""Isolated futures liquidation on the paper exchange (a mixin of :class:`~.paper.PaperExchange`)."""

from __future__ import annotations

from trading_pipelines.domain.models import Bar, Mode, OrderRole, OrderStatus, OrderType, PositionSide
from trading_pipelines.domain.paper import realized_pnl
from trading_pipelines.domain.sizing import liquidation_price
from trading_pipelines.ledger.models import PaperFillRow
from trading_pipelines.venues.paper_state import _Book, _Order
from trading_pipelines.venues.protocol import VenueEvent


class Liquidations:
    """``_liquidate`` for :class:`~.paper.PaperExchange` (it uses the exchange's ``mode``,
    ``mmr``, ``account``, ``_end`` and ``_cancel_brackets``)."""

    def _liquidate(self, b: _Book, instrument: str, bar: Bar) -> VenueEvent | None:
        """Isolated futures liquidation on ``bar``, before any other order of the bar.

        Triggers when the bar opens beyond the liquidation price, or when its range reaches the
        liquidation price and no stop-loss sits strictly before it. The venue closes the position
        with a reduce-only LIQUIDATION order filled at the liquidation price (the open if the bar
        gapped through it, but never past the bankruptcy price, where the loss equals the margin);
        the margin left after that loss is taken as the liquidation fee, so the position loses
        exactly its margin (Binance keeps the remainder for its insurance fund).
        """
        pos = b.positions.get(instrument)
        if pos is None or self.mode is not Mode.FUTURES:
            return None
        side = PositionSide(pos.side)
        liq = liquidation_price(pos.entry_price, pos.leverage, side, self.mmr.get(instrument, 0.0))
        long = side is PositionSide.LONG
        stop = next((o.trigger_price for o in b.orders.values()
                     if o.instrument == instrument and o.role == OrderRole.STOP_LOSS.value and o.armed), None)
        gapped = bar.open <= liq if long else bar.open >= liq
        reached = bar.low <= liq if long else bar.high >= liq
        stop_first = stop is not None and (stop > liq if long else stop < liq)
        if not (gapped or (reached and not stop_first)):
            return None
        price = bar.open if gapped else liq
        pnl = realized_pnl(side, pos.entry_price, price, pos.quantity)
        if pnl < -pos.margin:  # gapped past bankruptcy: the insurance fund absorbs the rest
            price = pos.entry_price - pos.margin / pos.quantity if long else pos.entry_price + pos.margin / pos.quantity
            pnl = -pos.margin
        entry_cid = pos.entry_client_order_id
        cid = entry_cid[:-3] + "-lq"
        o = _Order(client_order_id=cid, venue_order_id="P" + cid[3:], instrument=instrument, side=side.exit_side.value,
                   type=OrderType.MARKET.value, role=OrderRole.LIQUIDATION.value, quantity=pos.quantity,
                   placed_at=bar.open_time, reduce_only=True, parent_client_order_id=entry_cid,
                   position_side=side.value, leverage=pos.leverage, filled_at=bar.open_time, fill_price=price)
        self._end(b, o, OrderStatus.FILLED)
        fee = pos.margin + pnl  # what is left of the margin goes to the venue
        b.new_fills.append(PaperFillRow(fill_id=f"{cid}-1", client_order_id=cid, account=self.account, instrument=instrument,
                                        side=o.side, quantity=pos.quantity, price=price, fee=fee, time=bar.open_time))
        b.realized_pnl += pnl
        b.fees_paid += fee
        qty = pos.quantity
        del b.positions[instrument]
        self._cancel_brackets(b, instrument)
        return VenueEvent("fill", instrument, cid, OrderRole.LIQUIDATION.value, price, qty, bar.open_time, pnl)


__all__ = ["Liquidations"]
