"""The IBKR venue (trading_pipelines.venues.ibkr) against a fake ib_async ``IB``.

TWS / IB Gateway cannot run here, so ``tests/fake_ib.py`` stands in for it, answering with
ib_async's real objects; ``bracketOrder`` is ib_async's own. Units: shares, USD, UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fake_ib import ACCOUNT, FakeIB, SimulatedCrash
from ib_async import TradeLogEntry

from trading_pipelines.domain.ids import client_order_id, intent_id
from trading_pipelines.domain.models import OrderRequest, OrderRole, OrderStatus, OrderType, PositionSide, Side
from trading_pipelines.venues.ibkr import IbkrVenue, search_symbols
from trading_pipelines.venues.protocol import OrderRejected, OrderStateUnknown, VenueError, VenueUnavailable

T0 = datetime(2024, 5, 1, 14, 0, tzinfo=timezone.utc)
UNSET = 1.7976931348623157e308


def venue(ib: FakeIB, **kw) -> IbkrVenue:
    v = IbkrVenue(host="127.0.0.1", port=4002, client_id=7, account=ACCOUNT, ib=ib, connect_wait_s=0, **kw)
    v.connect()
    return v


def bracket(instrument="SPY", qty=10.0, stop=490.0, target=520.0, entry_type=OrderType.MARKET, price=None, window=T0):
    """The three requests exactly as requests.order_requests builds them."""
    iid = intent_id("strat", instrument, window)
    e = client_order_id(iid, OrderRole.ENTRY)
    return (
        OrderRequest(client_order_id=e, instrument=instrument, side=Side.BUY, type=entry_type, quantity=qty, price=price,
                     role=OrderRole.ENTRY),
        OrderRequest(client_order_id=client_order_id(iid, OrderRole.STOP_LOSS), instrument=instrument, side=Side.SELL,
                     type=OrderType.STOP, quantity=qty, trigger_price=stop, role=OrderRole.STOP_LOSS, reduce_only=True,
                     parent_client_order_id=e, oco_group=e),
        OrderRequest(client_order_id=client_order_id(iid, OrderRole.TAKE_PROFIT), instrument=instrument, side=Side.SELL,
                     type=OrderType.LIMIT, quantity=qty, price=target, role=OrderRole.TAKE_PROFIT, reduce_only=True,
                     parent_client_order_id=e, oco_group=e),
    )


def exit_request(instrument="SPY", qty=10.0, window=T0):
    return OrderRequest(client_order_id=client_order_id(intent_id("strat", instrument, window), OrderRole.EXIT),
                        instrument=instrument, side=Side.SELL, type=OrderType.MARKET, quantity=qty, role=OrderRole.EXIT,
                        reduce_only=True)


def place(v: IbkrVenue, reqs):
    return v.create_bracket(*reqs, placed_at=T0, position_side="long")


@pytest.fixture
def ib() -> FakeIB:
    return FakeIB(connected=True)


# ---------------------------------------------------------------------- brackets
def test_market_bracket_legs_links_transmit_and_order_refs(ib):
    v = venue(ib)
    en, sl, tp = bracket()
    orders = place(v, (en, sl, tp))

    assert len(ib.placed) == 3
    (c0, parent), (c1, take), (c2, stop) = ib.placed
    assert {c.conId for c in (c0, c1, c2)} == {756733}  # SPY, qualified first
    assert ib.calls.index("qualifyContracts") < ib.calls.index("placeOrder")
    assert (parent.orderType, parent.action, parent.totalQuantity, parent.transmit, parent.parentId) == ("MKT", "BUY", 10.0, False, 0)
    assert parent.lmtPrice == UNSET  # a market parent: no limit price
    assert (take.orderType, take.action, take.totalQuantity, take.lmtPrice, take.transmit) == ("LMT", "SELL", 10.0, 520.0, False)
    assert (stop.orderType, stop.action, stop.totalQuantity, stop.auxPrice, stop.transmit) == ("STP", "SELL", 10.0, 490.0, True)
    assert take.parentId == stop.parentId == parent.orderId != 0
    assert [parent.orderRef, stop.orderRef, take.orderRef] == [en.client_order_id, sl.client_order_id, tp.client_order_id]
    assert {o.account for o in (parent, take, stop)} == {ACCOUNT}
    assert (parent.tif, take.tif, stop.tif) == ("DAY", "GTC", "GTC")

    # returned as [entry, stop_loss, take_profit], read back from IB: the requests round-trip
    assert [o.client_order_id for o in orders] == [en.client_order_id, sl.client_order_id, tp.client_order_id]
    assert [o.request for o in orders] == [en, sl, tp]
    assert [o.status for o in orders] == [OrderStatus.ACCEPTED] * 3
    assert [o.venue_order_id for o in orders] == [str(parent.permId), str(stop.permId), str(take.permId)]
    assert all(o.placed_at == T0 for o in orders)
    # at the gateway: the parent works, the children wait for it
    assert [ib.trade_by_ref(r.client_order_id).orderStatus.status for r in (en, sl, tp)] == ["Submitted", "PreSubmitted", "PreSubmitted"]


def test_limit_bracket_parent_carries_the_protective_limit(ib):
    v = venue(ib)
    en, sl, tp = bracket(instrument="AAPL", qty=25.0, stop=160.5, target=190.25, entry_type=OrderType.LIMIT, price=171.3)
    orders = place(v, (en, sl, tp))
    parent, take, stop = (o for _, o in ib.placed)
    assert (parent.orderType, parent.lmtPrice, parent.totalQuantity, parent.transmit) == ("LMT", 171.3, 25.0, False)
    assert (take.lmtPrice, stop.auxPrice) == (190.25, 160.5)
    assert ib.placed[0][0].conId == 265598
    assert orders[0].request.price == 171.3 and orders[0].request.type is OrderType.LIMIT


def test_ambiguous_or_unknown_symbol_raises_naming_it(ib):
    v = venue(ib)
    with pytest.raises(VenueError, match="'DUAL'"):
        place(v, bracket(instrument="DUAL"))
    with pytest.raises(VenueError, match="'NOPE'"):
        v.resolve("NOPE")
    assert ib.placed == []


def test_fractional_shares_are_refused(ib):
    v = venue(ib)
    with pytest.raises(VenueError, match="whole shares"):
        place(v, bracket(qty=1.5))
    assert ib.placed == []


# ---------------------------------------------------------------------- exactly once
def test_exactly_once_after_crash_between_place_and_return(ib):
    reqs = bracket()
    ib.crash_after_placements = 3  # all three legs accepted, then the process dies before returning
    with pytest.raises(SimulatedCrash):
        place(IbkrVenue(host="127.0.0.1", port=4002, client_id=7, account=ACCOUNT, ib=ib), reqs)
    assert len(ib.placed) == 3

    fresh = venue(ib)  # a new process on the same gateway
    orders = place(fresh, reqs)
    assert len(ib.placed) == 3  # nothing placed again
    assert [o.venue_order_id for o in orders] == [str(ib.placed[i][1].permId) for i in (0, 2, 1)]
    assert [o.request for o in orders] == list(reqs)
    # the single-order verb is idempotent too
    again = fresh.create_order(reqs[0], placed_at=T0, position_side="long")
    assert again.venue_order_id == orders[0].venue_order_id and len(ib.placed) == 3


def test_crash_mid_bracket_places_only_the_missing_legs_on_the_existing_entry(ib):
    reqs = bracket()
    ib.crash_after_placements = 1  # only the (untransmitted) parent reached the gateway
    with pytest.raises(SimulatedCrash):
        place(IbkrVenue(host="127.0.0.1", port=4002, client_id=7, account=ACCOUNT, ib=ib), reqs)
    assert len(ib.placed) == 1 and ib.trade_by_ref(reqs[0].client_order_id).orderStatus.status == "PendingSubmit"

    orders = place(venue(ib), reqs)
    assert len(ib.placed) == 3
    parent, first, second = (o for _, o in ib.placed)
    assert parent.orderRef == reqs[0].client_order_id
    assert [first.orderRef, second.orderRef] == [reqs[1].client_order_id, reqs[2].client_order_id]
    assert first.parentId == second.parentId == parent.orderId
    assert (first.orderType, first.auxPrice, second.orderType, second.lmtPrice) == ("STP", 490.0, "LMT", 520.0)
    assert first.transmit and second.transmit  # transmitting a child transmits the held parent
    assert ib.trade_by_ref(reqs[0].client_order_id).orderStatus.status == "Submitted"
    assert [o.status for o in orders] == [OrderStatus.ACCEPTED] * 3


def test_exactly_once_finds_orders_only_tws_reports_as_completed(ib):
    reqs = bracket()
    place(venue(ib), reqs)
    ib.fill(reqs[0].client_order_id, 500.10)
    ib.fill(reqs[2].client_order_id, 520.0)  # take-profit: IB cancels the stop-loss (OCA)
    ib.forget_session()  # a new process: no session trades, only TWS's completed orders
    ib.calls.clear()

    orders = place(venue(ib), reqs)
    assert len(ib.placed) == 3
    assert "reqCompletedOrders" in ib.calls
    assert [o.status for o in orders] == [OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.FILLED]
    assert (orders[0].filled_quantity, orders[0].average_price) == (10.0, pytest.approx(500.10))
    assert (orders[2].filled_quantity, orders[2].average_price) == (10.0, 520.0)
    assert orders[1].request.parent_client_order_id == reqs[0].client_order_id  # from the id, not parentId (absent)


# ---------------------------------------------------------------------- single orders
def test_services_path_entry_then_legs_as_single_orders(ib):
    v = venue(ib)
    en, sl, tp = bracket()
    v.create_order(en, placed_at=T0, position_side="long")
    assert ib.placed[0][1].transmit and ib.placed[0][1].orderType == "MKT"
    ib.fill(en.client_order_id, 500.0)
    v.create_order(sl, placed_at=T0, position_side="long")
    v.create_order(tp, placed_at=T0, position_side="long")
    _, stop = ib.placed[1]
    _, take = ib.placed[2]
    # the parent filled: standalone GTC legs in one OCA group named after the entry
    assert (stop.orderType, stop.auxPrice, stop.parentId, stop.ocaGroup, stop.ocaType, stop.tif) == ("STP", 490.0, 0, en.client_order_id, 1, "GTC")
    assert (take.orderType, take.lmtPrice, take.parentId, take.ocaGroup, take.ocaType) == ("LMT", 520.0, 0, en.client_order_id, 1)
    assert stop.totalQuantity == take.totalQuantity == 10.0


def test_exit_sells_at_most_the_held_shares_and_cancels_the_legs(ib):
    v = venue(ib)
    en, sl, tp = bracket()
    place(v, (en, sl, tp))
    ib.fill(en.client_order_id, 500.0)
    ex = exit_request(qty=15.0)
    order = v.create_order(ex, placed_at=T0, position_side="long")
    _, sell = ib.placed[-1]
    assert (sell.orderType, sell.action, sell.totalQuantity, sell.orderRef) == ("MKT", "SELL", 10.0, ex.client_order_id)
    assert set(ib.cancelled) == {ib.trade_by_ref(sl.client_order_id).order.orderId, ib.trade_by_ref(tp.client_order_id).order.orderId}
    assert order.request.quantity == 10.0 and order.request.role is OrderRole.EXIT and order.request.reduce_only
    assert v.create_order(ex, placed_at=T0, position_side="long").venue_order_id == order.venue_order_id
    assert len(ib.placed) == 4

    ib.fill(ex.client_order_id, 505.0)
    with pytest.raises(VenueError, match="nothing to exit"):
        v.create_order(exit_request(window=datetime(2024, 5, 2, tzinfo=timezone.utc)), placed_at=T0, position_side="long")


def test_cancel_entry_cancels_its_children(ib):
    v = venue(ib)
    en, sl, tp = bracket(entry_type=OrderType.LIMIT, price=495.0)
    place(v, (en, sl, tp))
    ids = [ib.trade_by_ref(r.client_order_id).order.orderId for r in (en, sl, tp)]
    cancelled = v.cancel_order(en.client_order_id)
    assert cancelled.status is OrderStatus.CANCELED
    assert sorted(ib.cancelled) == sorted(ids)
    assert [v.fetch_order(r.client_order_id).status for r in (sl, tp)] == [OrderStatus.CANCELED] * 2
    assert v.fetch_open_orders() == []
    with pytest.raises(VenueError, match="unknown order"):
        v.cancel_order("tp-000000000000000000000000-en")
    assert v.fetch_order("tp-000000000000000000000000-en") is None


@pytest.mark.parametrize("ib_status, expected", [
    ("PendingSubmit", OrderStatus.ACCEPTED), ("PreSubmitted", OrderStatus.ACCEPTED), ("Submitted", OrderStatus.ACCEPTED),
    ("Filled", OrderStatus.FILLED), ("Cancelled", OrderStatus.CANCELED), ("ApiCancelled", OrderStatus.CANCELED),
    ("Inactive", OrderStatus.ACCEPTED),
])
def test_status_mapping(ib, ib_status, expected):
    v = venue(ib)
    en = bracket()[0]
    v.create_order(en, placed_at=T0, position_side="long")
    ib.trade_by_ref(en.client_order_id).orderStatus.status = ib_status
    assert v.fetch_order(en.client_order_id).status is expected


# ---------------------------------------------------------------------- symbols and contracts
def test_search_symbols_aapl(ib):
    found = search_symbols(ib, "AAPL")
    assert found[0] == {"conid": 265598, "symbol": "AAPL", "sec_type": "STK", "primary_exchange": "NASDAQ",
                        "currency": "USD", "derivative_sec_types": ["CFD", "OPT", "IOPT", "WAR", "BAG"]}
    assert [(d["conid"], d["currency"]) for d in found] == [(265598, "USD"), (38708077, "MXN"), (273982664, "CHF")]
    assert ib.calls == ["reqMatchingSymbols"]


def test_resolve(ib):
    v = venue(ib)
    assert v.resolve("AAPL") == {"conid": 265598, "symbol": "AAPL", "sec_type": "STK", "primary_exchange": "NASDAQ",
                                 "currency": "USD", "exchange": "SMART"}
    assert v.resolve("SPY")["conid"] == 756733 and v.resolve("SPY")["primary_exchange"] == "ARCA"
    assert ib.calls.count("qualifyContracts") == 2  # contracts are cached


# ---------------------------------------------------------------------- reconciliation and reads
def test_reconcile_picks_up_manual_order_and_position(ib):
    ib.add_manual_position("AAPL", 5, 170.0, mark=172.5)
    manual = ib.add_manual_order("AAPL", "BUY", 3, 165.0)
    v = IbkrVenue(host="127.0.0.1", port=4002, client_id=7, account=ACCOUNT, ib=ib)
    summary = v.reconcile()
    assert summary["positions"] == [{"instrument": "AAPL", "conid": 265598, "quantity": 5.0, "avg_cost": 170.0,
                                     "attributed": False}]
    assert summary["unattributed_positions"] == ["AAPL"]
    cid = f"ib-{manual.order.permId}"
    assert summary["open_orders"] == [{"client_order_id": cid, "instrument": "AAPL", "status": "ACCEPTED", "manual": True}]
    assert summary["manual_orders"] == [cid]
    assert {"positions", "openTrades", "reqCompletedOrders", "fills"} <= set(ib.calls)

    # the duplicate position opened by hand is visible to the pipeline
    (pos,) = v.fetch_positions()
    assert (pos.instrument, pos.side, pos.quantity, pos.entry_price, pos.mark_price) == ("AAPL", PositionSide.LONG, 5.0, 170.0, 172.5)
    (o,) = v.fetch_open_orders("AAPL")
    assert (o.client_order_id, o.request.role, o.request.type, o.request.price, o.request.quantity) == (cid, OrderRole.ENTRY, OrderType.LIMIT, 165.0, 3.0)
    assert v.fetch_open_orders("SPY") == []
    assert v.fetch_order(cid).status is OrderStatus.ACCEPTED


def test_fills_become_fills_and_positions(ib):
    v = venue(ib)
    en, sl, tp = bracket()
    place(v, (en, sl, tp))
    f1 = ib.fill(en.client_order_id, 500.10, commission=1.0)
    (pos,) = v.fetch_positions()
    assert (pos.instrument, pos.quantity, pos.entry_price, pos.mark_price, pos.opened_at) == ("SPY", 10.0, pytest.approx(500.10), 500.10, f1.time)
    ib.set_mark("SPY", 503.0)
    assert v.fetch_positions()[0].mark_price == 503.0
    f2 = ib.fill(tp.client_order_id, 520.0, commission=1.05, realized=197.95)

    fills = v.fetch_my_trades()
    assert [(f.fill_id, f.client_order_id, f.instrument, f.side, f.quantity, f.price, f.fee, f.time) for f in fills] == [
        (f1.execution.execId, en.client_order_id, "SPY", Side.BUY, 10.0, 500.10, 1.0, f1.time),
        (f2.execution.execId, tp.client_order_id, "SPY", Side.SELL, 10.0, 520.0, 1.05, f2.time),
    ]
    assert fills[0].fill_id == "0000e0d5.6630a1b2.01.01" and fills[0].time.tzinfo is not None
    assert [f.fill_id for f in v.fetch_my_trades(since=f1.time)] == [f2.execution.execId]
    assert v.fetch_positions() == []
    assert v.fetch_order(sl.client_order_id).status is OrderStatus.CANCELED  # OCA sibling
    assert v.fetch_order(tp.client_order_id).average_price == 520.0


def test_balance_numbers(ib):
    ib.set_account_values({"TotalCashValue": 95000.50, "NetLiquidation": 100250.75, "UnrealizedPnL": 250.25,
                           "RealizedPnL": -12.5})
    v = venue(ib)
    place(v, bracket(entry_type=OrderType.LIMIT, price=500.0, qty=10.0))  # a resting 10 × 500 USD entry
    aapl = bracket(instrument="AAPL", qty=4.0, stop=160.0, target=190.0)
    place(v, aapl)
    ib.fill(aapl[0].client_order_id, 170.0, commission=0.35)
    b = v.fetch_balance()
    assert (b.cash, b.equity, b.unrealized_pnl, b.realized_pnl) == (95000.50, 100250.75, 250.25, -12.5)
    assert b.reserved == 5000.0  # only the resting SPY limit entry; the AAPL entry filled
    assert b.fees_paid == 0.35
    assert b.free == 90000.50


def test_balance_falls_back_to_account_summary(ib):
    ib.set_account_values({"TotalCashValue": 1000.0, "NetLiquidation": 2000.0, "UnrealizedPnL": 0.0, "RealizedPnL": 0.0},
                          summary=True)
    b = venue(ib).fetch_balance()
    assert (b.cash, b.equity, b.reserved, b.fees_paid) == (1000.0, 2000.0, 0.0, 0.0)


def test_balance_without_account_data_is_a_clear_error(ib):
    with pytest.raises(VenueError, match="TotalCashValue, NetLiquidation"):
        venue(ib).fetch_balance()


# ---------------------------------------------------------------------- connection
def test_connect_calls_ib_connect_then_reconciles():
    ib = FakeIB(refuse_connects=1)
    v = IbkrVenue(host="10.0.0.5", port=4001, client_id=11, account=ACCOUNT, ib=ib, connect_timeout_s=3.0,
                  connect_wait_s=0)
    v.connect()
    assert ib.connect_calls == [("10.0.0.5", 4001, 11, 3.0, ACCOUNT)] * 2  # refused once, retried (tenacity)
    assert ib.calls.index("connect") < ib.calls.index("positions")
    ib.calls.clear()
    v.connect()  # already connected: no second connect
    assert "connect" not in ib.calls


def test_connection_refused_is_a_clear_venue_error():
    ib = FakeIB(refuse_connects=10)
    v = IbkrVenue(host="127.0.0.1", port=4002, client_id=7, account=ACCOUNT, ib=ib, connect_attempts=2, connect_wait_s=0)
    with pytest.raises(VenueError) as e:
        v.fetch_positions()  # verbs connect on first use
    msg = str(e.value)
    assert "127.0.0.1:4002" in msg and "TWS or IB Gateway is running" in msg and "Enable ActiveX and Socket Clients" in msg
    assert "client id 7" in msg
    assert len(ib.connect_calls) == 2


def test_real_ib_async_refused_port_is_a_clear_venue_error():
    """The real ib_async IB (no fake) against a local port nobody listens on: the exception it
    raises is the one the adapter turns into a VenueError."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    v = IbkrVenue(host="127.0.0.1", port=port, client_id=1, account=ACCOUNT, connect_attempts=1, connect_timeout_s=2)
    with pytest.raises(VenueError, match=f"127.0.0.1:{port}.*ConnectionRefusedError"):
        v.connect()


# ---------------------------------------------------------------------- held, partial fills, client ids
def test_inactive_is_an_order_held_by_ib_not_a_rejection(ib):
    """IB answers ``Inactive`` for an order it holds (here: outside regular trading hours, IB's
    error 399 message): ACCEPTED, the reason naming the hold; it is still open and cancellable.
    Inactive after error 201 "Order rejected" is a rejection."""
    v = venue(ib)
    en = bracket(entry_type=OrderType.LIMIT, price=495.0)[0]
    v.create_order(en, placed_at=T0, position_side="long")
    t = ib.trade_by_ref(en.client_order_id)
    t.orderStatus.status = "Inactive"
    t.log.append(TradeLogEntry(ib.tick(), "Inactive", "Order will not be placed at the exchange until 2024-05-02 09:30:00 US/Eastern", 399))
    got = v.fetch_order(en.client_order_id)
    assert got.status is OrderStatus.ACCEPTED
    assert got.reason == ("held by IB (Inactive): IB 399: Order will not be placed at the exchange until "
                          "2024-05-02 09:30:00 US/Eastern")
    assert [o.client_order_id for o in v.fetch_open_orders()] == [en.client_order_id]
    assert v.cancel_order(en.client_order_id).status is OrderStatus.CANCELED
    rejected = bracket(instrument="AAPL")[0]
    v.create_order(rejected, placed_at=T0, position_side="long")
    r = ib.trade_by_ref(rejected.client_order_id)
    r.orderStatus.status = "Inactive"
    r.log.append(TradeLogEntry(ib.tick(), "Inactive", "Order rejected - reason:No trading permissions.", 201))
    got = v.fetch_order(rejected.client_order_id)
    assert got.status is OrderStatus.REJECTED and "No trading permissions" in got.reason


def test_an_entry_partly_filled_then_cancelled_reports_the_held_shares(ib):
    """A 10-share LIMIT entry fills 4 at 495.00, then is cancelled: CANCELED with filled 4 (those
    shares are held), also for a new process that sees it only through TWS's completed orders.
    While it worked with 4 filled it was PARTIALLY_FILLED."""
    v = venue(ib)
    en = bracket(entry_type=OrderType.LIMIT, price=495.0)[0]
    v.create_order(en, placed_at=T0, position_side="long")
    ib.fill(en.client_order_id, 495.0, shares=4)
    assert v.fetch_order(en.client_order_id).status is OrderStatus.PARTIALLY_FILLED
    cancelled = v.cancel_order(en.client_order_id)
    assert (cancelled.status, cancelled.filled_quantity, cancelled.average_price) == (OrderStatus.CANCELED, 4.0, 495.0)
    assert cancelled.reason == "cancelled after 4 of 10 shares filled"
    ib.forget_session()
    again = venue(ib).fetch_order(en.client_order_id)
    assert (again.status, again.filled_quantity) == (OrderStatus.CANCELED, 4.0)
    assert v.fetch_positions()[0].quantity == 4.0


def second_client(ib: FakeIB, client_id: int = 9) -> IbkrVenue:
    """Another process on the same gateway with its own client id (IB's order ids are per client)."""
    ib.client_id, ib.client._next = client_id, 1
    return IbkrVenue(host="127.0.0.1", port=4002, client_id=client_id, account=ACCOUNT, ib=ib, connect_wait_s=0)


def test_a_missing_leg_never_takes_parent_id_from_another_client_id(ib):
    """Client 7 placed the SPY entry (orderId 1), still working. Client 9 has its own orderId 1 (an
    AAPL entry). Client 9 placing the SPY stop-loss must not send parentId 1: IB would attach it to
    client 9's AAPL order. Nothing is held yet, so the leg is not placed (INITIALIZED, with the
    reason); once the entry filled, the legs go on without a parent in one OCA group."""
    v7 = venue(ib)
    en, sl, tp = bracket(entry_type=OrderType.LIMIT, price=495.0)
    v7.create_order(en, placed_at=T0, position_side="long")
    v9 = second_client(ib)
    v9.create_order(bracket(instrument="AAPL", window=datetime(2024, 5, 2, tzinfo=timezone.utc))[0], placed_at=T0,
                    position_side="long")
    assert ib.placed[-1][1].orderId == 1 == ib.placed[0][1].orderId  # the same orderId in two client ids
    n = len(ib.placed)
    got = v9.create_order(sl, placed_at=T0, position_side="long")
    assert len(ib.placed) == n and got.status is OrderStatus.INITIALIZED and "client id 7" in got.reason

    ib.fill(en.client_order_id, 495.0)
    stop, take = v9.create_protection(sl, tp, placed_at=T0, position_side="long")
    (_, s_order), (_, t_order) = ib.placed[n:]
    assert s_order.parentId == t_order.parentId == 0
    assert (s_order.ocaGroup, s_order.ocaType, t_order.ocaGroup, t_order.ocaType) == (en.client_order_id, 1, en.client_order_id, 1)
    assert (stop.status, take.status) == (OrderStatus.ACCEPTED, OrderStatus.ACCEPTED)


def test_create_protection_is_an_oca_group_sized_to_the_held_shares_and_idempotent(ib):
    """10 SPY shares held (bought by hand: no entry of this pipeline): a GTC STP 490 and a GTC LMT
    520, SELL 10, ``ocaGroup`` the stop's oco_group, ``ocaType`` 1, both transmitted, stop first.
    A re-run places nothing; the take-profit filling cancels the stop (OCA); both legs are found,
    looked up and cancelled by their client order ids."""
    ib.add_manual_position("SPY", 10, 480.0, mark=500.0)
    v = venue(ib)
    _, sl, tp = bracket(qty=12.0)  # asks for more than is held: sized to the 10 held
    legs = v.create_protection(sl, tp, placed_at=T0, position_side="long")
    (_, stop), (_, take) = ib.placed
    assert (stop.orderType, stop.action, stop.totalQuantity, stop.auxPrice, stop.tif) == ("STP", "SELL", 10.0, 490.0, "GTC")
    assert (take.orderType, take.totalQuantity, take.lmtPrice, take.tif) == ("LMT", 10.0, 520.0, "GTC")
    assert stop.ocaGroup == take.ocaGroup == sl.oco_group and stop.ocaType == take.ocaType == 1
    assert stop.transmit and take.transmit and stop.parentId == take.parentId == 0
    assert [o.client_order_id for o in legs] == [sl.client_order_id, tp.client_order_id]
    assert [o.status for o in legs] == [OrderStatus.ACCEPTED] * 2 and legs[0].request.quantity == 10.0
    v.create_protection(sl, tp, placed_at=T0, position_side="long")
    assert len(ib.placed) == 2
    assert v.lookup_order(sl.client_order_id).status is OrderStatus.ACCEPTED
    assert v.cancel_order(sl.client_order_id, instrument="SPY").status is OrderStatus.CANCELED
    # a stop alone, then the take-profit joins its OCA group
    _, sl2, tp2 = bracket(window=datetime(2024, 5, 3, tzinfo=timezone.utc))
    (lone,) = v.create_protection(sl2, None, placed_at=T0, position_side="long")
    (joined, added) = v.create_protection(sl2, tp2, placed_at=T0, position_side="long")
    assert joined.venue_order_id == lone.venue_order_id and ib.placed[-1][1].ocaGroup == ib.placed[-2][1].ocaGroup
    ib.fill(tp2.client_order_id, 520.0)
    assert v.fetch_order(sl2.client_order_id).status is OrderStatus.CANCELED  # IB's OCA cancelled the stop


def test_protection_and_exit_with_no_shares_are_order_rejected(ib):
    v = venue(ib)
    _, sl, tp = bracket()
    with pytest.raises(OrderRejected, match="no SPY shares held"):
        v.create_protection(sl, tp, placed_at=T0, position_side="long")
    with pytest.raises(OrderRejected, match="nothing to exit"):
        v.create_order(exit_request(), placed_at=T0, position_side="long")
    assert ib.placed == []


def test_a_connection_lost_while_placing_is_order_state_unknown(ib):
    """The socket breaks inside ``placeOrder``: the order may be at IB, so
    :class:`OrderStateUnknown` names it; a connection refused before anything was sent is
    :class:`VenueUnavailable`."""
    v = venue(ib)
    en = bracket()[0]
    real = ib.placeOrder

    def broken(contract, order):
        real(contract, order)
        raise ConnectionResetError(104, "Connection reset by peer")

    ib.placeOrder = broken
    with pytest.raises(OrderStateUnknown) as caught:
        v.create_order(en, placed_at=T0, position_side="long")
    assert caught.value.client_order_id == en.client_order_id
    ib.placeOrder = real
    assert v.lookup_order(en.client_order_id).status is OrderStatus.ACCEPTED  # it was at IB
    ib.disconnect()
    ib.refuse_connects = 10
    with pytest.raises(VenueUnavailable) as caught:
        v.fetch_positions()
    assert not isinstance(caught.value, OrderStateUnknown)
