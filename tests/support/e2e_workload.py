"""The end-to-end test's producer: a fixed mix of tasks published over a few seconds.

Run as `python -m tests.support.e2e_workload SECONDS` with CE_TEST_BROKER_URL set, in its own
process so that tests.support.workload_app reads the broker URL at import. Deterministic, so the
test can say
which alerts must fire: every tick publishes successes and a failure; retries, a routed task and
a slow task come every few ticks; and the backlog queue, which no worker consumes, grows by three
messages per tick (past the 100-message warning threshold within ~9 s, never near 1000).
"""

from __future__ import annotations

import sys
import time

BACKLOG_QUEUE = "backlog"
TICK = 0.25
SLOW_SECONDS = 1.2


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
        for _ in range(3):
            add.apply_async((0, 0), queue=BACKLOG_QUEUE)
        # Keep to the schedule even when publishing is slow on a busy machine.
        time.sleep(max(0.0, start + (tick + 1) * TICK - time.monotonic()))
    app.close()


if __name__ == "__main__":
    main(float(sys.argv[1]))
