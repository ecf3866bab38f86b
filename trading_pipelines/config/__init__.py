"""Strategy configuration: the schema of a strategy's ``defs.yaml`` and its loader.

A strategy lives at ``trading_pipelines/defs/strategies/<name>/defs.yaml`` as a Dagster component
(``type: trading_pipelines.components.StrategyComponent``); its ``attributes`` block is validated
by :class:`StrategySpec`. Every model forbids unknown fields, so a typo is an error, not a silent
default. :func:`load_strategy_file` raises :class:`StrategyConfigError` naming the file and the
dotted field path.

User additions, from the environment (both ``os.pathsep``-separated): ``TRADING_STRATEGIES_PATH``
(more strategy folders, see :mod:`~trading_pipelines.config.loading`) and
``TRADING_INSTRUMENTS_PATH`` (more instrument catalogues, see
:mod:`~trading_pipelines.config.instruments`).

The modules (each imports only ``trading_pipelines.domain`` and third-party libraries):

* :mod:`~trading_pipelines.config.paths`: the shipped strategies, data dir and catalogue;
* :mod:`~trading_pipelines.config.base`: :class:`StrategyConfigError`, the strict model base,
  pydantic error formatting;
* :mod:`~trading_pipelines.config.venues`: the ``venue`` block (paper, ccxt, ibkr, webhook);
* :mod:`~trading_pipelines.config.spec`: :class:`StrategySpec` and its ``data``, ``template``,
  ``risk``, ``futures``, ``schedule`` and ``execution`` blocks;
* :mod:`~trading_pipelines.config.instruments`: the instrument catalogues;
* :mod:`~trading_pipelines.config.windows`: window ranges and ``--start``/``--end`` parsing;
* :mod:`~trading_pipelines.config.loading`: strategy files, folders and their loading.

Every name is re-exported here: ``from trading_pipelines.config import X`` is the public import.
"""

from __future__ import annotations

from trading_pipelines.config.base import StrategyConfigError
from trading_pipelines.config.instruments import (
    InstrumentCatalogueError,
    instrument_catalogue,
    instrument_data_file,
    instruments_file,
    instruments_files,
)
from trading_pipelines.config.loading import (
    load_strategies,
    load_strategies_report,
    load_strategy_file,
    parse_strategy,
    strategy_files,
    strategy_roots,
)
from trading_pipelines.config.paths import DEFAULT_DATA_DIR, INSTRUMENTS_FILE, PACKAGE_DIR, REPO_DIR, STRATEGIES_DIR
from trading_pipelines.config.spec import (
    TIMEFRAMES,
    BollingerParams,
    BudgetConfig,
    DataConfig,
    ExecutionConfig,
    FuturesConfig,
    IndicatorConfig,
    MacdParams,
    OpenAIProviderConfig,
    RiskConfig,
    RulesProviderConfig,
    ScheduleConfig,
    SignalProviderConfig,
    StopConfig,
    StrategySpec,
    TemplateConfig,
    WindowParam,
)
from trading_pipelines.config.venues import (
    CcxtVenueConfig,
    IbkrVenueConfig,
    PaperVenueConfig,
    VenueConfig,
    WebhookVenueConfig,
)
from trading_pipelines.config.windows import WindowBoundError, parse_window_bound, window_range

__all__ = [
    "DEFAULT_DATA_DIR", "INSTRUMENTS_FILE", "PACKAGE_DIR", "REPO_DIR", "STRATEGIES_DIR", "TIMEFRAMES",
    "BollingerParams", "BudgetConfig", "CcxtVenueConfig", "DataConfig", "ExecutionConfig", "FuturesConfig",
    "IbkrVenueConfig", "IndicatorConfig", "InstrumentCatalogueError", "MacdParams", "OpenAIProviderConfig",
    "PaperVenueConfig", "RiskConfig", "RulesProviderConfig", "ScheduleConfig", "SignalProviderConfig", "StopConfig",
    "StrategyConfigError", "StrategySpec", "TemplateConfig", "VenueConfig", "WebhookVenueConfig", "WindowBoundError",
    "WindowParam", "instrument_catalogue", "instrument_data_file", "instruments_file", "instruments_files",
    "load_strategies", "load_strategies_report", "load_strategy_file", "parse_strategy", "parse_window_bound",
    "strategy_files", "strategy_roots", "window_range",
]
