"""The ``venue`` block of a strategy: one model per venue kind (``paper``, ``ccxt``, ``ibkr``,
``webhook``), discriminated by ``kind``, each carrying the replay cost model. Credentials are
never in the file: the models name the environment variables that hold them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from trading_pipelines.config.base import _Strict


class _VenueCosts(_Strict):
    """What every venue config carries: the cost model of its replays and guards. ``fee_rate`` a
    fraction of notional (0.001 = 0.1 %); ``slippage_bps`` basis points; ``starting_cash`` the quote
    currency a replay book (always simulated) starts from."""

    starting_cash: float = Field(default=10_000.0, gt=0, description="quote currency")
    fee_rate: float = Field(default=0.001, ge=0, lt=0.05)
    slippage_bps: float = Field(default=5.0, ge=0, le=500)


class PaperVenueConfig(_VenueCosts):
    """The simulated venue (every replay book uses it, whatever the live venue is)."""

    kind: Literal["paper"] = "paper"


class CcxtVenueConfig(_VenueCosts):
    """A ccxt exchange: ``binance`` (spot) or ``binanceusdm`` (USDⓈ-M perpetuals). The API key and
    secret come from the environment variables named here, never from the file. ``sandbox``:
    ccxt's testnet URLs."""

    kind: Literal["ccxt"]
    exchange: Literal["binance", "binanceusdm"]
    api_key_env: str = "BINANCE_API_KEY"
    secret_env: str = "BINANCE_SECRET"
    sandbox: bool = False
    account: str = "default"


class IbkrVenueConfig(_VenueCosts):
    """Interactive Brokers through ib_async: TWS or IB Gateway at ``host``:``port`` (Gateway 4002
    paper / 4001 live; TWS 7497 / 7496). ``client_id`` fixed per deployment (orders re-bind after a
    restart) and unique per connection; ``account`` the IB account code (empty: the only one)."""

    kind: Literal["ibkr"]
    host: str = "127.0.0.1"
    port: int = Field(default=4002, ge=1, le=65535)
    client_id: int = Field(default=17, ge=0)
    account: str = ""
    connect_timeout_s: float = Field(default=10.0, gt=0)


class WebhookVenueConfig(_VenueCosts):
    """Orders POSTed as signed JSON (HMAC-SHA256 over ``timestamp.body`` with the secret from
    ``secret_env``) to the URL in ``url_env`` (a URL may carry a token: it is read from the
    environment too). Fire and forget: a 2xx is SENT, nothing is monitored; ``equity`` is the quote
    currency the sizing uses (a webhook reports no balance)."""

    kind: Literal["webhook"]
    url_env: str = "TRADING_WEBHOOK_URL"
    secret_env: str = "TRADING_WEBHOOK_SECRET"
    equity: float = Field(gt=0, description="quote currency the 1 % sizing is computed on")
    timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    account: str = "default"


VenueConfig = Annotated[PaperVenueConfig | CcxtVenueConfig | IbkrVenueConfig | WebhookVenueConfig,
                        Field(discriminator="kind")]
