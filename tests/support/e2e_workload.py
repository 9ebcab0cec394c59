"""The end-to-end test's workload: a fixed mix of tasks published over a few seconds, and the
exporter flags and runners the deploy tests share for it.

Run as `python -m tests.support.e2e_workload SECONDS` with CE_TEST_BROKER_URL set, in its own
process so that tests.support.workload_app reads the broker URL at import. Deterministic, so the
test can say which alerts must fire: every tick publishes successes and a failure; retries, a
routed task and
a slow task come every few ticks; one task is sent already expired; and the backlog queue,
which no worker consumes, grows by three messages per tick (past the 100-message warning
threshold within ~9 s, never near 1000).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

from tests.support.servers import REPO_ROOT

BACKLOG_QUEUE = "backlog"
TICK = 0.25
SLOW_SECONDS = 1.2
# An `expires` already past: the worker that receives the task drops it (CeleryTaskExpired).
EXPIRED_AT = datetime(2000, 1, 1, tzinfo=timezone.utc)


def main(seconds: float) -> None:
    from tests.support.workload_app import add, app, fail, retry_once, routed, sleep

    ticks = int(seconds / TICK)
    start = time.monotonic()
    for tick in range(ticks):
        add.delay(tick, 1)
        add.delay(tick, 2)
        fail.delay()
        if tick % 4 == 0:
            retry_once.delay()
            routed.delay()
        if tick % 8 == 0:
            sleep.delay(SLOW_SECONDS)
        if tick == 0:  # expired before any worker can take it: revoked as expired
            add.apply_async((0, 0), expires=EXPIRED_AT)
        for _ in range(3):
            add.apply_async((0, 0), queue=BACKLOG_QUEUE)
        # Keep to the schedule even when publishing is slow on a busy machine.
        time.sleep(max(0.0, start + (tick + 1) * TICK - time.monotonic()))
    app.close()


if __name__ == "__main__":
    main(float(sys.argv[1]))


WORKER_TIMEOUT = 5


QUEUES = ("celery", "routed", BACKLOG_QUEUE)


def start_workload(broker_url: str, seconds: float) -> subprocess.Popen[bytes]:
    """The workload producer (tests/support/e2e_workload.py) in the background."""
    env = {**os.environ, "CE_TEST_BROKER_URL": broker_url, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.e2e_workload", str(seconds)], cwd=REPO_ROOT, env=env
    )


def finish_workload(producer: subprocess.Popen[bytes], seconds: float) -> None:
    assert producer.wait(timeout=seconds + 30) == 0


def run_workload(broker_url: str, seconds: float) -> None:
    finish_workload(start_workload(broker_url, seconds), seconds)


EXPORTER_ARGS = (
    "--worker-timeout", str(WORKER_TIMEOUT),
    "--queues", ",".join(QUEUES),
    "--queue-poll-interval", "1",
    "--inspect-interval", "2",
    "--inspect-timeout", "1",
    # The workload app's beat_schedule (tests/support/workload_app.py): its entries send
    # workload.add, which the workload sends too, so the periodic-task series have data.
    "--app", "tests.support.workload_app:app",
)  # fmt: skip
