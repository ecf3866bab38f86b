"""``python -m trading_pipelines.cli``: the ``trading-pipelines`` console script."""

import sys

from trading_pipelines.cli import main

sys.exit(main())
