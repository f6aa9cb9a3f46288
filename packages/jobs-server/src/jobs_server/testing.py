"""Stand-ins for users' tests: the store, the publisher and the clock in memory, with the rules
of their production counterparts (the contract suites in tests/contract hold both to one
behaviour), so that code built on jobs-server runs without PostgreSQL or SQS.

    clock = ManualClock()
    store = InMemoryJobStore(clock)
    publisher = InMemoryPublisher()
    ...
    clock.advance(30)   # leases expire, run_at comes due, retention passes
"""

from jobs_server.clock import ManualClock
from jobs_server.publisher.base import InMemoryPublisher
from jobs_server.store.memory import InMemoryJobStore

__all__ = ["InMemoryJobStore", "InMemoryPublisher", "ManualClock"]
