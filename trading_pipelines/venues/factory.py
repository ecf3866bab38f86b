"""The venue a book trades on, chosen by the strategy's ``venue`` block.

* Every **replay** book, whatever the live venue is, trades on the simulated paper exchange with
  the venue block's cost model (``starting_cash``, ``fee_rate``, ``slippage_bps``): a replay never
  reaches a real account.
* The **live** book trades on the configured venue: ``paper`` (:class:`~.paper.PaperExchange`),
  ``ccxt`` (:class:`~.ccxt_venue.CcxtVenue`: ``binance`` spot, ``binanceusdm`` futures), ``ibkr``
  (:class:`~.ibkr.IbkrVenue`, connected and reconciled on start: the venue's state wins) or
  ``webhook`` (:class:`~.webhook.WebhookVenue`). Orders reach a real venue only when the live
  switch allows it (``runtime.live_trading_allowed``); until then its intents are DRY_RUN.

Secrets (API key and secret, webhook URL and HMAC secret) are read from the environment
variables the block names, at the moment the venue is built, and handed to the adapter only;
:class:`VenueConfigError` names a missing variable, never a value.

``CLIENTS`` lets a deployment or a test hand an adapter its client (a ccxt exchange whose
transport answers with recorded responses, a fake ``IB`` standing in for TWS): ``{"ccxt":
fn(exchange_id) -> ccxt.Exchange, "ibkr": fn() -> IB, "webhook": fn() -> httpx2.Client}``.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

from trading_pipelines.venues.protocol import Venue

CLIENTS: dict[str, Callable] = {}

LIVE_BOOK = "live"  # the ledger's name for the live book (ledger.models.LIVE_BOOK)


def venue_account(strategy: str, book: str) -> str:
    """The venue account of a book: the strategy's name for the live book, ``strategy@book`` else."""
    return strategy if book == LIVE_BOOK else f"{strategy}@{book}"


def make_paper_venue(spec, market, engine, book: str = LIVE_BOOK, unreadable: tuple[type[Exception], ...] = ()):
    """The strategy's paper exchange account for ``book`` (``spec`` a ``StrategySpec``, ``market`` a
    market data source the exchange reads bars from); ``engine`` is the venue's own store.
    ``unreadable``: the market data source's errors for bars that cannot be read (the stores'
    ``MarketDataError``, which this layer cannot import); the exchange sees them as
    :class:`~trading_pipelines.venues.protocol.BarsUnreadable` and freezes only that instrument."""
    from trading_pipelines.venues.paper import PaperExchange
    from trading_pipelines.venues.protocol import BarsUnreadable

    def bars(inst, start, end):
        try:
            return market.bars_between(inst, spec.timeframe, start, end)
        except unreadable as e:
            raise BarsUnreadable(str(e)) from e

    v = spec.venue
    return PaperExchange(account=venue_account(spec.name, book), mode=spec.mode, starting_cash=v.starting_cash,
                         fee_rate=v.fee_rate, slippage_bps=v.slippage_bps,
                         bars_fn=bars,
                         bar_duration=spec.bar_duration, engine=engine,
                         tick_sizes={i: spec.instrument(i).tick_size for i in spec.instruments},
                         maintenance_margin_rates={i: spec.instrument(i).maintenance_margin_rate for i in spec.instruments})


class VenueConfigError(ValueError):
    """A venue cannot be built (a secret's environment variable is unset). Names the variable."""


def _secret(environ: Mapping[str, str], name: str, what: str, strategy: str) -> str:
    value = (environ.get(name) or "").strip()
    if not value:
        raise VenueConfigError(f"strategy {strategy!r}: the {what} comes from the environment variable {name}, "
                               f"which is unset or empty")
    return value


def ibkr_venue(*, host: str, port: int, client_id: int, account: str, connect_timeout_s: float = 10.0):
    """An :class:`~.ibkr.IbkrVenue` connected to TWS / IB Gateway (``CLIENTS["ibkr"]``'s ``IB`` when
    set) and reconciled on start: manual orders and positions are the venue's, and win."""
    from trading_pipelines.venues.ibkr import IbkrVenue

    client = CLIENTS.get("ibkr")
    venue = IbkrVenue(host=host, port=port, client_id=client_id, account=account, ib=client() if client else None,
                      connect_timeout_s=connect_timeout_s)
    venue.connect()
    return venue


def make_venue(spec, market, venue_engine, book: str, environ: Mapping[str, str] = os.environ,
               unreadable: tuple[type[Exception], ...] = ()) -> Venue:
    """The venue of ``book`` for strategy ``spec`` (see the module doc). ``venue_engine``: the
    paper exchange's own store; ``unreadable``: see :func:`make_paper_venue`. Raises
    :class:`VenueConfigError` for a missing secret."""
    v = spec.venue
    if book != LIVE_BOOK or v.kind == "paper":
        return make_paper_venue(spec, market, venue_engine, book, unreadable)
    account = venue_account(spec.name, book)
    if v.kind == "ccxt":
        from trading_pipelines.venues.ccxt_venue import CcxtVenue

        client = CLIENTS.get("ccxt")
        return CcxtVenue(exchange_id=v.exchange, account=account, mode=spec.mode,
                         api_key=_secret(environ, v.api_key_env, "API key", spec.name),
                         secret=_secret(environ, v.secret_env, "API secret", spec.name), sandbox=v.sandbox,
                         margin_mode=spec.futures.margin_mode if spec.futures else "isolated",
                         exchange=client(v.exchange) if client else None, instruments=spec.instruments)
    if v.kind == "ibkr":
        return ibkr_venue(host=v.host, port=v.port, client_id=v.client_id, account=v.account,
                          connect_timeout_s=v.connect_timeout_s)
    if v.kind == "webhook":
        from trading_pipelines.venues.webhook import WebhookVenue

        client = CLIENTS.get("webhook")
        return WebhookVenue(url=_secret(environ, v.url_env, "webhook URL", spec.name), account=account,
                            secret=_secret(environ, v.secret_env, "webhook HMAC secret", spec.name), equity=v.equity,
                            timeout_s=v.timeout_s, max_retries=v.max_retries, client=client() if client else None)
    raise VenueConfigError(f"strategy {spec.name!r}: unknown venue kind {v.kind!r}")


__all__ = ["CLIENTS", "VenueConfigError", "ibkr_venue", "make_paper_venue", "make_venue", "venue_account"]
