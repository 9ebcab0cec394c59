"""Demo workload for scripts/demo.sh: a steady mix of successes, failures, retries, a slow
task and routed work, so every dashboard panel has something to show."""

from __future__ import annotations

import random
import time

from tests.workload_app import add, fail, retry_once, routed, sleep


def main() -> None:
    while True:
        for _ in range(random.randint(5, 15)):
            add.delay(random.randint(0, 9), random.randint(0, 9))
        if random.random() < 0.3:
            fail.delay()
        if random.random() < 0.2:
            retry_once.delay()
        if random.random() < 0.2:
            sleep.delay(random.uniform(0.5, 3.0))
        routed.delay()
        time.sleep(1.0)


if __name__ == "__main__":
    main()
