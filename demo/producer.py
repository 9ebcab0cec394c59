"""Demo workload for scripts/demo.sh: a steady mix of successes, failures, retries, a slow
task and routed work, so every dashboard panel has something to show."""

from __future__ import annotations

import random
import time

from demo.app import add, charge_card, fetch_rates, report, resize_image


def main() -> None:
    while True:
        for _ in range(random.randint(5, 15)):
            add.delay(random.randint(0, 9), random.randint(0, 9))
        if random.random() < 0.3:
            charge_card.delay()
        if random.random() < 0.2:
            fetch_rates.delay()
        if random.random() < 0.2:
            resize_image.delay()
        report.delay()
        time.sleep(1.0)


if __name__ == "__main__":
    main()
