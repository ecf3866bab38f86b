"""Where bars come from and where charts go: :mod:`.market_data` (OHLCV sources, point in time),
:mod:`.charts` (chart stores: local disk, S3-compatible bucket) and :mod:`.chart_render`
(candlestick PNGs)."""
