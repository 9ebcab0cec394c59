"""One log line per broker problem, however many threads run into it.

The event thread, the queue-poll thread and the inspect thread each talk to the broker, and
each finds out on its own when it is down, misconfigured or refusing us; each still records it
as a metric. Here they all report to one BrokerOutages, which logs the first report of a problem
at WARNING (in words, classify.py), every repeat at DEBUG, and one INFO line once every thread
that saw it works again. A thread that sees another problem (say the queue poll is refused an
operation while events flow, or refused something else once the first grant is in) gets a line
of its own: that is news. Two reports are one problem when their faults' `key`s match.

`fault_line()` is the line itself, which `check` prints too.

Only logging lives here: metrics stay with the threads, so a scrape never waits on this lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import redact_url
from .classify import CONNECTION_KINDS, Fault, FaultDescriber

log = logging.getLogger(__name__)


def fault_line(fault: Fault, source: str, broker: str, lost: bool = False) -> str:
    """The one line that tells an operator about `fault`, which `source` (a thread's job, e.g.
    "queue poll") met on `broker` (the URL, password redacted). `lost`: it had worked before."""
    if fault.kind not in CONNECTION_KINDS:
        return f"{source} failing on broker {broker}: {fault.description}"
    verb = "lost connection to" if lost else "cannot connect to"
    words = fault.description
    if fault.setup_hint and not lost:
        words += f" ({fault.setup_hint})"
    return f"{verb} broker {broker}: {words}"


@dataclass
class _Problem:
    fault: Fault  # as first reported and logged
    since: float
    first_source: str
    lost: bool  # the broker had worked before: "lost connection", not "cannot connect"
    sources: set[str] = field(default_factory=set)  # threads that see it now


class BrokerOutages:
    """Where the broker threads report failure and success; logs each problem once."""

    def __init__(
        self,
        broker: str,
        describe: Callable[[BaseException], Fault],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker  # the URL as it may be shown: password already redacted
        self.describe = describe
        self.clock = clock
        self._lock = threading.Lock()
        self._problems: dict[str, _Problem] = {}  # fault key -> problem
        self._seen_by: dict[str, str] = {}  # source -> key of the fault it fails with
        self._ever_worked = False

    def failed(self, source: str, exc: BaseException) -> None:
        """`source` (a thread's job, e.g. "events") could not use the broker because of `exc`."""
        fault = self.describe(exc)
        # Lines are written under the lock too: a recovery is never logged before its warning.
        with self._lock:
            previous = self._seen_by.get(source)
            if previous is not None and previous != fault.key:
                # The same thread, a new reason (e.g. refused, then a wrong password once the
                # broker is back): the old problem is over for it, the new one is news.
                self._leave(source, previous)
            self._seen_by[source] = fault.key
            problem = self._problems.get(fault.key)
            if problem is not None:
                problem.sources.add(source)
                log.debug("%s: broker still failing: %s", source, fault.description)
                return
            problem = _Problem(fault, self.clock(), source, self._ever_worked, {source})
            self._problems[fault.key] = problem
            self._log_start(problem)

    def succeeded(self, source: str) -> bool:
        """`source` used the broker; True if it had been failing until now."""
        with self._lock:
            self._ever_worked = True
            key = self._seen_by.pop(source, None)
            if key is None:
                return False
            over = self._leave(source, key)
            if over is not None:
                self._log_end(over)
            return True

    def _log_start(self, problem: _Problem) -> None:
        line = fault_line(problem.fault, problem.first_source, self.broker, problem.lost)
        log.warning("%s; retrying until it works", line)

    def _log_end(self, problem: _Problem) -> None:
        took = self.clock() - problem.since
        if problem.fault.kind not in CONNECTION_KINDS:
            who = problem.first_source
            log.info("%s works again on broker %s after %.1fs", who, self.broker, took)
        elif problem.lost:
            log.info("reconnected to broker %s after %.1fs", self.broker, took)
        else:
            log.info("connected to broker %s after %.1fs of failures", self.broker, took)

    def failing(self) -> dict[str, str]:
        """Source -> the kind of problem it sees now (for tests and debugging)."""
        with self._lock:
            return {source: self._problems[key].fault.kind for source, key in self._seen_by.items()}

    def _leave(self, source: str, key: str) -> _Problem | None:
        """Take `source` off the problem of `key`; the problem if nobody sees it any more."""
        problem = self._problems[key]
        problem.sources.discard(source)
        if problem.sources:
            return None
        del self._problems[key]
        return problem


def broker_outages(broker_url: str, ssl_options: Mapping[str, Any] | None) -> BrokerOutages:
    """The reporter for this broker, describing faults with its URL and TLS options."""
    return BrokerOutages(redact_url(broker_url), FaultDescriber(broker_url, ssl_options))
