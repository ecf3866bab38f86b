"""``ibkr search`` and ``ibkr contracts``: Interactive Brokers symbol search and contract resolution."""

from __future__ import annotations

import json

from trading_pipelines.cli.common import CliError, _strategy, ensure_dagster_home


def cmd_ibkr(args) -> int:
    """``ibkr search`` / ``ibkr contracts``: a connection error or an unresolvable symbol → exit 2."""
    from trading_pipelines import operations
    from trading_pipelines.resources.dagster_resources import default_resources
    from trading_pipelines.venues import factory
    from trading_pipelines.venues.protocol import VenueError

    try:
        if args.action == "search":
            venue = factory.ibkr_venue(host=args.host, port=args.port, client_id=args.client_id, account="")
            rows = operations.search_contracts(venue, args.pattern)
        else:
            ensure_dagster_home()
            trading = default_resources()["trading"]
            rows = operations.resolve_contracts(operations.runtime_for(trading, _strategy(args.strategy)), run_id="cli:ibkr")
    except (VenueError, ValueError) as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        for r in rows:
            print("  ".join(f"{k}={v}" for k, v in r.items()))
    return 0
