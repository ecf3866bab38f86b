"""Venues behind one protocol (:mod:`.protocol`, ccxt's vocabulary): the paper exchange, Binance through
ccxt, IBKR through ib_async, and a signed webhook; :mod:`.factory` picks one from the strategy's YAML."""
