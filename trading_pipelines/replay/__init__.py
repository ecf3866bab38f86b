"""Replay (backtest) scorecards: pure computations over a finished replay."""
