"""Energy activity data: counter steps judged (`counters`), periods aggregated into
ActivityRecords (`aggregation`), shared meters allocated to lines (`allocation`), energy
balances (`balance`), emission factors (`factors`) and the period report (`report`). Reads the
store and the metrology layer; knows nothing of collectors, sync or the command line.

Outside the gateway (the backlog simulator) takes the aggregator from here."""

from gateway.activity.aggregation import PeriodInput, aggregate

__all__ = ["PeriodInput", "aggregate"]
