"""BrokerOutages with a fake clock and scripted faults: each problem is one WARNING however
many threads report it however often, one INFO when the last of them works again; a problem of
another kind is news; reports from many threads at once still make one line."""

from __future__ import annotations

import logging
import threading

import pytest

from celery_exporter.faults.classify import AUTH, PERMISSION, UNREACHABLE, Fault
from celery_exporter.faults.outages import BrokerOutages

URL = "redis://:***@broker:6379/0"


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Scripted(Exception):
    """An exception that carries the Fault the scripted describer returns for it."""

    def __init__(self, kind: str, description: str) -> None:
        super().__init__(description)
        self.fault = Fault(kind, description)


def describe(exc: BaseException) -> Fault:
    assert isinstance(exc, Scripted)
    return exc.fault


REFUSED = Scripted(UNREACHABLE, "connection refused")
WRONG_PASSWORD = Scripted(AUTH, "authentication failed")
NO_PERMISSION = Scripted(PERMISSION, "NOPERM this user has no permissions to run 'llen'")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outages(clock: FakeClock) -> BrokerOutages:
    return BrokerOutages(URL, describe, clock)


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name == "celery_exporter.faults.outages" and r.levelno >= level
    ]


def test_one_warning_for_all_threads_and_one_info_when_the_last_is_back(
    outages: BrokerOutages, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="celery_exporter.faults.outages")
    for _ in range(5):
        for source in ("events", "queue poll", "worker inspect"):
            outages.failed(source, REFUSED)
        clock.now += 2
    assert outages.succeeded("events") is True
    assert outages.succeeded("queue poll") is True
    assert lines(caplog) == [
        f"WARNING cannot connect to broker {URL}: connection refused; retrying until it works"
    ]
    clock.now += 1.5
    outages.failed("events", REFUSED)  # flaps while the inspector has not retried yet
    assert outages.succeeded("events") is True
    assert outages.succeeded("worker inspect") is True
    assert outages.succeeded("worker inspect") is False  # already fine: nothing to say
    assert lines(caplog) == [
        f"WARNING cannot connect to broker {URL}: connection refused; retrying until it works",
        f"INFO connected to broker {URL} after 11.5s of failures",
    ]
    # every repeat was heard, at DEBUG
    assert len(lines(caplog, logging.DEBUG)) == 2 + 15 - 1 + 1


def test_an_outage_after_the_broker_worked_is_a_lost_connection(
    outages: BrokerOutages, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outages.succeeded("queue poll")
    outages.failed("queue poll", REFUSED)
    outages.failed("events", REFUSED)
    clock.now += 30
    outages.succeeded("events")
    outages.succeeded("queue poll")
    assert lines(caplog) == [
        f"WARNING lost connection to broker {URL}: connection refused; retrying until it works",
        f"INFO reconnected to broker {URL} after 30.0s",
    ]


def test_a_setup_hint_is_given_only_before_the_broker_ever_worked(
    outages: BrokerOutages, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reset = Scripted(UNREACHABLE, "the broker reset the connection")
    reset.fault = Fault(UNREACHABLE, "the broker reset the connection", "try rediss://")
    outages.failed("events", reset)
    outages.succeeded("events")
    outages.failed("events", reset)
    assert [line.split(": ", 1)[1] for line in lines(caplog) if "WARNING" in line] == [
        "the broker reset the connection (try rediss://); retrying until it works",
        "the broker reset the connection; retrying until it works",
    ]


def test_a_new_reason_on_the_same_thread_is_news_and_the_old_one_ends_quietly(
    outages: BrokerOutages, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker was down; it came back with a password we do not have."""
    caplog.set_level(logging.INFO)
    outages.failed("events", REFUSED)
    outages.failed("queue poll", REFUSED)
    clock.now += 10
    outages.failed("events", WRONG_PASSWORD)
    outages.failed("queue poll", WRONG_PASSWORD)
    outages.failed("events", WRONG_PASSWORD)
    clock.now += 5
    outages.succeeded("events")
    outages.succeeded("queue poll")
    assert lines(caplog) == [
        f"WARNING cannot connect to broker {URL}: connection refused; retrying until it works",
        f"WARNING cannot connect to broker {URL}: authentication failed; retrying until it works",
        f"INFO connected to broker {URL} after 5.0s of failures",
    ]
    assert outages.failing() == {}


def test_another_kind_of_problem_on_one_thread_gets_its_own_lines(
    outages: BrokerOutages, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Events flow; the queue poll is refused an operation: that is its own line."""
    caplog.set_level(logging.INFO)
    outages.succeeded("events")
    for _ in range(3):
        outages.failed("queue poll", NO_PERMISSION)
        outages.succeeded("events")
        clock.now += 5
    outages.failed("events", REFUSED)  # and meanwhile the broker goes away and comes back
    outages.succeeded("events")
    assert outages.failing() == {"queue poll": PERMISSION}
    outages.succeeded("queue poll")
    assert lines(caplog) == [
        f"WARNING queue poll failing on broker {URL}: {NO_PERMISSION}; retrying until it works",
        f"WARNING lost connection to broker {URL}: connection refused; retrying until it works",
        f"INFO reconnected to broker {URL} after 0.0s",
        f"INFO queue poll works again on broker {URL} after 15.0s",
    ]


def test_refusals_of_different_things_are_each_news(
    outages: BrokerOutages, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The event stream is refused a channel and the poll a command: two problems, two lines.
    Once LLEN is granted the poll is refused the keys: news too, for the operator granted what
    the first line asked and still has work to do."""
    caplog.set_level(logging.INFO)
    no_channel = Scripted(PERMISSION, "may not read channels")
    no_keys = Scripted(PERMISSION, "may not read the keys: grant ~jobs*")
    for _ in range(2):
        outages.failed("events", no_channel)
        outages.failed("queue poll", NO_PERMISSION)
    clock.now += 5
    outages.failed("queue poll", no_keys)
    outages.failed("queue poll", no_keys)
    clock.now += 5
    outages.succeeded("queue poll")
    outages.succeeded("events")
    assert lines(caplog) == [
        f"WARNING events failing on broker {URL}: may not read channels; retrying until it works",
        f"WARNING queue poll failing on broker {URL}: {NO_PERMISSION}; retrying until it works",
        f"WARNING queue poll failing on broker {URL}: {no_keys}; retrying until it works",
        f"INFO queue poll works again on broker {URL} after 5.0s",
        f"INFO events works again on broker {URL} after 10.0s",
    ]
    assert outages.failing() == {}


def test_threads_reporting_at_once_make_one_line(
    outages: BrokerOutages, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    start = threading.Barrier(8)

    def report(source: str) -> None:
        start.wait()
        for _ in range(200):
            outages.failed(source, REFUSED)

    threads = [threading.Thread(target=report, args=(f"thread-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lines(caplog)) == 1
    for n in range(8):
        outages.succeeded(f"thread-{n}")
    assert [line.split()[0] for line in lines(caplog)] == ["WARNING", "INFO"]
