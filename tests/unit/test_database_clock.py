"""DatabaseClock: a reading is placed at the midpoint of its round trip, and a sync keeps the
reading of its shortest round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs_server.clock import DatabaseClock

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # the database's time at monotonic 100.0


class FakeDatabase:
    """clock_timestamp() read at a monotonic instant; the first call waits `connect` seconds
    (a pool opening its connection) before the statement runs, every call then takes `rtt`."""

    def __init__(self, *, connect: float, rtt: float) -> None:
        self.mono = 100.0
        self.connect = connect
        self.rtt = rtt
        self.calls = 0

    def monotonic(self) -> float:
        return self.mono

    async def read(self) -> datetime:
        self.calls += 1
        if self.calls == 1:
            self.mono += self.connect
        self.mono += self.rtt / 2
        reading = T0 + timedelta(seconds=self.mono - 100.0)
        self.mono += self.rtt / 2
        return reading


async def test_a_slow_first_round_trip_does_not_set_the_clock():
    db = FakeDatabase(connect=0.040, rtt=0.0004)
    clock = DatabaseClock(db.read, monotonic=db.monotonic)
    await clock.sync()
    assert db.calls == DatabaseClock.SAMPLES
    db.mono += 5.0
    error = clock.now() - (T0 + timedelta(seconds=db.mono - 100.0))
    # one reading, the first, would leave the clock 20 ms ahead: half the connection's wait
    assert abs(error) <= timedelta(milliseconds=0.3), error


async def test_readings_of_equal_round_trips_keep_the_clock_exact():
    db = FakeDatabase(connect=0.0, rtt=0.002)
    clock = DatabaseClock(db.read, monotonic=db.monotonic)
    await clock.sync()
    assert clock.now() == T0 + timedelta(seconds=db.mono - 100.0)
