"""The read side of :class:`~trading_pipelines.venues.ccxt_venue.CcxtVenue`: trading rules,
positions, balance, fills and futures terms (Binance through ccxt). A mixin: the venue class
supplies ``exchange``, ``mode``, ``quote``, ``instruments``, ``margin_mode``, ``_known``,
``_order_cids``, ``_guard``, ``_markets`` and ``_market``."""

from __future__ import annotations

from datetime import datetime, timezone

import ccxt

from trading_pipelines.domain.models import Fill, Mode, Position, PositionSide, Side
from trading_pipelines.venues.ccxt_orders import num as _f
from trading_pipelines.venues.ccxt_orders import utc_ms as _utc_ms
from trading_pipelines.venues.protocol import Balance, FuturesTerms


class CcxtReads:
    """Rules, positions, balance, fills and futures terms (see each method)."""

    RECENT_TRADES = 100
    """Spot entry-price estimate: how many recent trades of a held asset are read (one request)."""

    def _step(self, m: dict, key: str, raw_filter: str, raw_key: str) -> float:
        """Precision as a step: ccxt's ``TICK_SIZE`` mode stores the step itself, ``DECIMAL_PLACES``
        a digit count; the raw exchangeInfo filter is the fallback."""
        p = (m.get("precision") or {}).get(key)
        if p is not None:
            return float(p) if self.exchange.precisionMode == ccxt.TICK_SIZE else 10.0 ** -float(p)
        f = next((f for f in (m.get("info") or {}).get("filters", []) if f.get("filterType") == raw_filter), {})
        return _f(f.get(raw_key))

    def instrument_rules(self, instrument: str) -> dict:
        """Binance's trading rules for ``instrument``, read from ``load_markets`` (exchangeInfo):
        ``lot_step``/``min_qty`` base units (LOT_SIZE ``stepSize``/``minQty``), ``tick_size`` quote
        currency (PRICE_FILTER ``tickSize``), ``min_notional`` quote currency (spot NOTIONAL
        ``minNotional``, futures MIN_NOTIONAL ``notional``), via ccxt's unified ``precision`` and
        ``limits``."""
        return self._guard("load_markets", lambda: self._rules(instrument))

    def _rules(self, instrument: str) -> dict:
        m = self._market(instrument)
        limits = m.get("limits") or {}
        lot = self._step(m, "amount", "LOT_SIZE", "stepSize")
        return {"lot_step": lot, "min_qty": _f((limits.get("amount") or {}).get("min"), lot),
                "tick_size": self._step(m, "price", "PRICE_FILTER", "tickSize"),
                "min_notional": _f((limits.get("cost") or {}).get("min"))}

    def _positions(self) -> list[Position]:
        if self.mode is Mode.SPOT:
            return self._spot_positions(self.exchange.fetch_balance())[0]
        out = []
        for p in self.exchange.fetch_positions():
            qty = abs(_f(p.get("contracts")) * _f(p.get("contractSize"), 1.0))
            if qty <= 0 or p.get("side") not in ("long", "short"):
                continue
            info = p.get("info") or {}
            notional = abs(_f(p.get("notional")))
            initial = _f(p.get("initialMargin")) or _f(info.get("positionInitialMargin"))
            leverage = _f(p.get("leverage")) or (notional / initial if initial > 0 else 1.0)
            mode = p.get("marginMode")
            margin = _f(info.get("isolatedWallet")) if mode == "isolated" and _f(info.get("isolatedWallet")) else initial
            out.append(Position(instrument=p["symbol"], side=PositionSide(p["side"]), quantity=qty,
                                entry_price=_f(p.get("entryPrice")), mark_price=_f(p.get("markPrice")),
                                leverage=round(leverage, 6), margin=margin,
                                opened_at=_utc_ms(p.get("timestamp")) or datetime.now(timezone.utc),
                                liquidation_price=_f(p.get("liquidationPrice")) or None,
                                margin_mode=mode if mode in ("isolated", "cross") else None))
        return out

    def fetch_positions(self) -> list[Position]:
        """Open positions.

        Futures (``GET /fapi/v3/positionRisk``): quantity = |positionAmt|, Binance's entry, mark
        and liquidation prices, margin mode; ``margin`` = the isolated wallet (isolated) or the
        position's initial margin (cross); ``leverage`` as ccxt reports it, else notional ÷
        initial margin (v3 positionRisk has no leverage field); ``opened_at`` is the position's
        last update time (Binance reports no open time).

        Spot (``GET /api/v3/account``): every non-quote asset with a ``{asset}/USDT`` market whose
        total (free + locked) is at least the lot minimum and the minimum notional is a long
        position marked at the last price (``GET /api/v3/ticker/24hr``). Binance keeps no entry
        price for spot, so ``entry_price`` is the average price of the most recent buys that add
        up to the held quantity (one ``myTrades`` request, :attr:`RECENT_TRADES` trades), or the
        mark price when those trades do not show the buys; ``opened_at`` the oldest of those buys
        (else now)."""
        return self._guard("fetch_positions", self._positions)

    def _spot_positions(self, bal: dict) -> tuple[list[Position], float]:
        out, marked = [], 0.0
        markets = self._markets()
        for asset, total in sorted((bal.get("total") or {}).items()):
            symbol = f"{asset}/{self.quote}"
            qty = _f(total)
            if asset == self.quote or qty <= 0 or symbol not in markets:
                continue
            rules = self._rules(symbol)
            if qty < rules["min_qty"]:
                continue  # dust
            mark = _f(self.exchange.fetch_ticker(symbol).get("last"))
            if qty * mark < rules["min_notional"]:
                continue  # dust
            entry, opened = self._spot_entry(symbol, qty, mark)
            marked += qty * mark
            out.append(Position(instrument=symbol, side=PositionSide.LONG, quantity=qty, entry_price=entry,
                                mark_price=mark, opened_at=opened))
        return out, marked

    def _spot_entry(self, symbol: str, qty: float, mark: float) -> tuple[float, datetime]:
        trades = self.exchange.fetch_my_trades(symbol, None, self.RECENT_TRADES)
        need, cost, got, first = qty, 0.0, 0.0, None
        for t in sorted(trades, key=lambda t: t.get("timestamp") or 0, reverse=True):
            if t.get("side") != "buy" or need <= 1e-12:
                continue
            take = min(need, _f(t.get("amount")))
            cost, got, need = cost + take * _f(t.get("price")), got + take, need - take
            first = t.get("timestamp")
        if got <= 0:
            return mark, datetime.now(timezone.utc)
        return cost / got, _utc_ms(first) or datetime.now(timezone.utc)

    def fetch_balance(self) -> Balance:
        """Money in USDT (the quote currency).

        Futures (``GET /fapi/v3/account``, the USDT row of ``assets``): ``cash`` = walletBalance −
        positionInitialMargin, ``reserved`` = openOrderInitialMargin, ``unrealized_pnl`` =
        unrealizedProfit, ``equity`` = marginBalance (wallet + unrealized P&L).
        Spot (``GET /api/v3/account``): ``cash`` = USDT free + locked, ``reserved`` = USDT locked in
        open orders, ``equity`` = cash + Σ held quantity × last price (see :meth:`fetch_positions`),
        ``unrealized_pnl`` from the estimated entry prices. ``realized_pnl`` and ``fees_paid`` are
        0.0: Binance's account endpoints do not report them (sum :meth:`fetch_my_trades` for fees)."""
        def read() -> Balance:
            bal = self.exchange.fetch_balance()
            if self.mode is Mode.FUTURES:
                row = next((a for a in (bal.get("info") or {}).get("assets", []) if a.get("asset") == self.quote), {})
                wallet, unreal = _f(row.get("walletBalance")), _f(row.get("unrealizedProfit"))
                return Balance(cash=wallet - _f(row.get("positionInitialMargin")), reserved=_f(row.get("openOrderInitialMargin")),
                               equity=_f(row.get("marginBalance"), wallet + unreal), realized_pnl=0.0,
                               unrealized_pnl=unreal, fees_paid=0.0)
            q = bal.get(self.quote) or {}
            positions, marked = self._spot_positions(bal)
            cash = _f(q.get("total"))
            return Balance(cash=cash, reserved=_f(q.get("used")), equity=cash + marked, realized_pnl=0.0,
                           unrealized_pnl=sum(p.unrealized_pnl for p in positions), fees_paid=0.0)
        return self._guard("fetch_balance", read)

    def fetch_my_trades(self, since: datetime | None = None) -> list[Fill]:
        """Fills after ``since`` (UTC) on the symbols this venue knows (``instruments`` and those
        it placed orders on), oldest first, ``fill_id`` = Binance's trade id. With ``since`` the venue
        pages forward from it (:meth:`_trades`); without, Binance's default window (spot: latest
        500 trades, futures: last 7 days). ``fee`` in quote currency: a commission in the
        base asset is valued at the fill price, one in another asset (BNB) at its last USDT price.
        ``client_order_id``: from this process's orders, else read back from the order."""
        def read() -> list[Fill]:
            symbols = sorted(set(self.instruments) | {k.request.instrument for k in self._known.values()})
            since_ms = int(since.timestamp() * 1000) + 1 if since else None
            fills, prices = [], {}
            for symbol in symbols:
                base = self._market(symbol)["base"]
                for t in self._trades(symbol, since_ms):
                    when = _utc_ms(t.get("timestamp"))
                    if when is None or (since is not None and when <= since):
                        continue
                    fee = t.get("fee") or {}
                    cost, cur = _f(fee.get("cost")), fee.get("currency")
                    if cur == base:
                        cost *= _f(t.get("price"))
                    elif cur and cur != self.quote and cost:
                        pair = f"{cur}/{self.quote}"
                        if pair not in prices:
                            prices[pair] = _f(self.exchange.fetch_ticker(pair).get("last")) if pair in self._markets() else 0.0
                        cost *= prices[pair]
                    fills.append(Fill(fill_id=str(t["id"]), client_order_id=self._cid_of(symbol, str(t.get("order"))),
                                      instrument=symbol, side=Side(t["side"]), quantity=_f(t.get("amount")),
                                      price=_f(t.get("price")), fee=cost, time=when))
            seen = {f.fill_id: f for f in fills}
            return sorted(seen.values(), key=lambda f: (f.time, f.fill_id))
        return self._guard("fetch_my_trades", read)

    def _now_ms(self) -> int:
        """Now, epoch milliseconds UTC (the exchange's clock)."""
        return self.exchange.milliseconds()

    PAGE = 1000  # Binance's largest myTrades / userTrades page
    WEEK_MS = 7 * 24 * 3600 * 1000

    def _trades(self, symbol: str, since_ms: int | None) -> list[dict]:
        """Trades of ``symbol`` from ``since_ms`` on, paged forward: spot ``startTime`` pages of
        1000; futures windows of at most 7 days (Binance userTrades: ``endTime − startTime`` ≤ 7
        days), each paged the same way. Without ``since_ms``: one default request."""
        if since_ms is None:
            return self.exchange.fetch_my_trades(symbol)
        out: list[dict] = []
        start, now = since_ms, self._now_ms()
        for _ in range(10_000):  # a bound, not a retry: ~190 years of weekly windows
            if start > now:
                break
            end = min(start + self.WEEK_MS - 1, now) if self.mode is Mode.FUTURES else None
            batch = self.exchange.fetch_my_trades(symbol, start, self.PAGE, {"until": end} if end else {})
            out.extend(batch)
            if len(batch) >= self.PAGE:
                start = max(t.get("timestamp") or start for t in batch) + 1
            elif end is None:
                break
            else:
                start = end + 1
        return out

    def _cid_of(self, symbol: str, order_id: str) -> str:
        cid = self._order_cids.get((symbol, order_id))
        if cid is None:
            o = self.exchange.fetch_order(order_id, symbol)
            cid = o.get("clientOrderId") or ""
            self._order_cids[(symbol, order_id)] = cid
        return cid

    def futures_terms(self, instrument: str) -> FuturesTerms | None:
        """Funding and leverage terms of a USDⓈ-M perpetual (None for spot): ``mark_price`` and
        ``funding_rate`` (fraction per funding interval) and ``next_funding_time`` from
        ``GET /fapi/v1/premiumIndex`` (ccxt ``fetch_funding_rate``: ``lastFundingRate``,
        ``nextFundingTime``); ``max_leverage`` the highest ``initialLeverage`` of the symbol's
        notional brackets (``GET /fapi/v1/leverageBracket``, ccxt ``fetch_leverage_tiers``);
        ``margin_mode`` the mode this venue sets before each entry."""
        if self.mode is not Mode.FUTURES:
            return None
        def read() -> FuturesTerms:
            self._market(instrument)
            fr = self.exchange.fetch_funding_rate(instrument)
            tiers = self.exchange.fetch_leverage_tiers([instrument]).get(instrument) or []
            max_lev = max((_f(t.get("maxLeverage")) for t in tiers), default=0.0) or None
            rate = fr.get("fundingRate")
            return FuturesTerms(instrument=instrument, mark_price=_f(fr.get("markPrice")) or None,
                                funding_rate=float(rate) if rate is not None else None,
                                next_funding_time=_utc_ms(fr.get("fundingTimestamp") or fr.get("nextFundingTimestamp")),
                                max_leverage=max_lev, margin_mode=self.margin_mode)
        return self._guard("futures_terms", read)



__all__ = ["CcxtReads"]
