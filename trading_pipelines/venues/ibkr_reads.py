"""The read side of :class:`~trading_pipelines.venues.ibkr.IbkrVenue`: positions, balance,
fills and the start-up reconciliation, read from IB each time (the venue wins). A mixin: the venue
class supplies ``account``, ``currency``, ``_first_seen``, ``_call``, ``_fills``, ``_mine`` and
``_where``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterable

from trading_pipelines.domain.models import Fill, OrderStatus, Position, PositionSide, Side
from trading_pipelines.venues.ibkr_orders import _DONE, _STATUS, _cid_of, _instrument, _now, _ours, _price, _utc
from trading_pipelines.venues.protocol import Balance, VenueError

log = logging.getLogger("trading_pipelines.venues.ibkr")


class IbkrReads:
    """Positions, balance, fills and reconciliation (see each method)."""

    def fetch_positions(self) -> list[Position]:
        """Open positions of the account from ``ib.positions(account)``, manual ones included,
        marked at ``ib.portfolio(account)``'s ``marketPrice`` (the average cost when IB has no
        price). ``quantity`` shares (positive; a short is reported as SHORT), ``entry_price`` IB's
        average cost per share (USD, commissions included), ``opened_at`` the earliest execution
        on the contract that IB reports (its current day), else when this venue first saw it."""
        def run(ib):
            marks = {p.contract.conId: p.marketPrice for p in ib.portfolio(self.account)}
            fills = self._fills(ib)
            out = []
            for p in ib.positions(self.account):
                qty = float(p.position)
                if qty == 0:
                    continue
                conid = p.contract.conId
                side = PositionSide.LONG if qty > 0 else PositionSide.SHORT
                mult = float(p.contract.multiplier) if p.contract.multiplier else 1.0
                entry = float(p.avgCost) / mult
                mark = _price(marks.get(conid))
                mark = mark if mark is not None and mark > 0 else entry
                opened = [_utc(f.time) for f in fills if f.contract.conId == conid
                          and f.execution.side == ("BOT" if side is PositionSide.LONG else "SLD")]
                first = self._first_seen.setdefault(conid, _now())
                out.append(Position(instrument=_instrument(p.contract), side=side, quantity=abs(qty), entry_price=entry,
                                    mark_price=mark, opened_at=min(opened) if opened else first))
            return out

        return self._call("fetch_positions", run)

    def fetch_balance(self) -> Balance:
        """From ``ib.accountValues(account)`` (falling back to ``ib.accountSummary(account)``),
        in ``currency`` (USD; IB's BASE when no USD row): ``cash`` TotalCashValue, ``equity``
        NetLiquidation, ``unrealized_pnl`` UnrealizedPnL, ``realized_pnl`` RealizedPnL (IB's,
        today's). ``reserved``: what the resting BUY entries would cost (remaining shares × limit
        price, or × mark for a market order). ``fees_paid``: the commissions of the executions
        IB reports (``fills()``, its current day)."""
        def run(ib):
            tags = ("TotalCashValue", "NetLiquidation", "UnrealizedPnL", "RealizedPnL")
            values = self._values(ib.accountValues(self.account), tags)
            if any(values.get(t) is None for t in tags):
                summary = self._values(ib.accountSummary(self.account), tags)
                values = {t: values.get(t) if values.get(t) is not None else summary.get(t) for t in tags}
            missing = [t for t in ("TotalCashValue", "NetLiquidation") if values.get(t) is None]
            if missing:
                raise VenueError(f"IBKR account {self.account} at {self._where()} reports no {', '.join(missing)} "
                                 f"in {self.currency}: is the account right and its data subscribed?")
            marks = {p.contract.conId: p.marketPrice for p in ib.portfolio(self.account)}
            reserved = 0.0
            for t in ib.openTrades():
                o = t.order
                if not self._mine(t) or o.action != "BUY" or o.parentId or t.orderStatus.status in _DONE:
                    continue
                px = _price(o.lmtPrice) if "LMT" in o.orderType else _price(marks.get(t.contract.conId))
                remaining = float(t.orderStatus.remaining) if t.orderStatus.remaining else float(o.totalQuantity)
                reserved += remaining * (px or 0.0)
            fees = sum(float(f.commissionReport.commission) for f in self._fills(ib)
                       if f.commissionReport and _price(f.commissionReport.commission) is not None)
            return Balance(cash=values["TotalCashValue"], reserved=reserved, equity=values["NetLiquidation"],
                           realized_pnl=values.get("RealizedPnL") or 0.0, unrealized_pnl=values.get("UnrealizedPnL") or 0.0,
                           fees_paid=fees)

        return self._call("fetch_balance", run)

    def _values(self, rows: Iterable, tags: tuple[str, ...]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for cur in (self.currency, "BASE"):
            for v in rows:
                mine = not self.account or v.account == self.account
                if mine and v.tag in tags and v.currency == cur and out.get(v.tag) is None:
                    try:
                        out[v.tag] = float(v.value)
                    except (TypeError, ValueError):
                        continue
        return out

    def fetch_my_trades(self, since: datetime | None = None) -> list[Fill]:
        """Executions from ``ib.fills()`` with time strictly after ``since`` (UTC), oldest first:
        ``fill_id`` IB's execId, ``client_order_id`` the execution's orderRef (``ib-<permId>``
        for a manual order), ``quantity`` shares, ``price`` USD, ``fee`` the commission report's
        commission (USD; 0 until IB sends the report). ib_async holds the executions of the
        current session (those of IB's current day are requested on connect)."""
        def run(ib):
            cutoff = _utc(since)
            out = []
            for f in self._fills(ib):
                e, t = f.execution, _utc(f.time or f.execution.time)
                if cutoff is not None and t <= cutoff:
                    continue
                fee = _price(f.commissionReport.commission) if f.commissionReport else None
                out.append(Fill(fill_id=e.execId, client_order_id=self._fill_cid(f), instrument=_instrument(f.contract),
                                side=Side.BUY if e.side == "BOT" else Side.SELL, quantity=float(e.shares),
                                price=float(e.price), fee=fee or 0.0, time=t))
            return sorted(out, key=lambda x: (x.time, x.fill_id))

        return self._call("fetch_my_trades", run)

    # ------------------------------------------------------------------ start-up reconciliation
    def reconcile(self) -> dict:
        """Read IB's state (``positions()``, ``openTrades()`` + ``reqAllOpenOrders()``,
        ``reqCompletedOrders(apiOnly=False)``, ``fills()``); the venue's state wins: nothing here
        is kept but when each position was first seen, every verb reads IB again. Returns::

            {'account', 'positions': [{'instrument', 'conid', 'quantity', 'avg_cost', 'attributed'}],
             'open_orders': [{'client_order_id', 'instrument', 'status', 'manual'}],
             'completed_orders': int, 'fills': int,
             'manual_orders': [client order ids], 'unattributed_positions': [instruments]}

        ``manual``: an order without one of this pipeline's client order ids (placed in TWS or
        by another program). ``attributed``: a position on which one of IB's reported executions
        (its current day) carries this pipeline's client order id; positions held from earlier
        days or opened by hand are unattributed. Quantities shares, costs USD."""
        def run(ib):
            fills = self._fills(ib)
            ours_on = {f.contract.conId for f in fills if _ours(f.execution.orderRef)}
            positions = []
            for p in ib.positions(self.account):
                if float(p.position) == 0:
                    continue
                self._first_seen.setdefault(p.contract.conId, _now())
                positions.append({"instrument": _instrument(p.contract), "conid": p.contract.conId,
                                  "quantity": float(p.position), "avg_cost": float(p.avgCost),
                                  "attributed": p.contract.conId in ours_on})
            open_orders, seen = [], set()
            for t in [*ib.openTrades(), *(ib.reqAllOpenOrders() or [])]:
                cid = _cid_of(t.order)
                if not self._mine(t) or t.orderStatus.status in _DONE or cid in seen:
                    continue
                seen.add(cid)
                open_orders.append({"client_order_id": cid, "instrument": _instrument(t.contract),
                                    "status": _STATUS.get(t.orderStatus.status, OrderStatus.ACCEPTED).value, "manual": not _ours(cid)})
            completed = [t for t in ib.reqCompletedOrders(apiOnly=False) or [] if self._mine(t)]
            summary = {"account": self.account, "positions": positions, "open_orders": open_orders,
                       "completed_orders": len(completed), "fills": len(fills),
                       "manual_orders": [o["client_order_id"] for o in open_orders if o["manual"]],
                       "unattributed_positions": [p["instrument"] for p in positions if not p["attributed"]]}
            log.info("IBKR %s reconciled: %d positions (%s unattributed), %d open orders (%d manual), %d completed, %d fills",
                     self.account, len(positions), len(summary["unattributed_positions"]), len(open_orders),
                     len(summary["manual_orders"]), len(completed), len(fills))
            return summary

        return self._call("reconcile", run)


__all__ = ["IbkrReads"]
