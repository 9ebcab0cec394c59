"""Soak mode of the bench runner (`python -m bench.run soak`, not in CI): a steady event rate
for many minutes while workers come and go.

Every minute a window of worker names slides on by `--churn`: new workers announce themselves
(worker-online), departing ones either say goodbye (worker-offline, even minutes) or vanish
silently as after a SIGKILL (odd minutes). The exporter's RSS and exposition size are sampled
each minute; at the end every published event must have been counted (published == counted).
Exits 1 if events were lost. Single-threaded: publishers and the exporter are subprocesses.

    python -m bench.run soak --minutes 30 --rate 3000            # own Redis
    python -m bench.run soak --broker rabbitmq --minutes 10
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from bench import phases
from bench.consumers import ConsumerProcess, count_samples
from bench.loadgen import publish, split_jobs
from bench.phases import broker_server
from bench.stream import StreamSpec


@dataclass
class Settings:
    minutes: int
    rate: float  # events/s in total
    workers: int  # workers alive at any time
    churn: int  # workers replaced per minute
    processes: int  # publisher processes
    broker: str
    exporter_args: tuple[str, ...] = ()


@dataclass
class Sample:
    minute: int
    published: int
    counted: int
    rss_bytes: int
    samples: int
    live_workers: int


def window(minute: int, size: int, churn: int) -> tuple[str, ...]:
    start = minute * churn
    return tuple(f"celery@soak-{i:05d}" for i in range(start, start + size))


def minute_spec(base: StreamSpec, minute: int, size: int, churn: int) -> StreamSpec:
    now, nxt = window(minute, size, churn), window(minute + 1, size, churn)
    before = window(minute - 1, size, churn) if minute > 0 else ()
    leaving = tuple(w for w in now if w not in nxt)
    return replace(
        base,
        workers=now,
        arriving_workers=tuple(w for w in now if w not in before),
        depart_workers=leaving if minute % 2 == 0 else (),
        seed=minute + 1,
    )


def live_workers(exposition: str) -> int:
    return sum(
        1
        for line in exposition.splitlines()
        if line.startswith("celery_worker_up{") and line.endswith(" 1.0")
    )


def soak(args: Settings) -> int:
    base = StreamSpec()
    published: Counter[str] = Counter()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="celery-exporter-soak-") as tmpdir:
        tmp = Path(tmpdir)
        with broker_server(args.broker, tmp) as broker:
            exporter = ConsumerProcess("exporter", broker.url, tmp / "logs", args.exporter_args)
            exporter.start()
            try:
                phases.warm_up(exporter, broker, phases.Options())
                start_count = exporter.count()
                samples.append(Sample(0, 0, 0, exporter.rss_bytes(), 0, 0))
                for minute in range(args.minutes):
                    spec = minute_spec(base, minute, args.workers, args.churn)
                    jobs = split_jobs(
                        broker.url, spec, args.processes, duration=60.0, rate=args.rate
                    )
                    # the exporter consumes live while this minute is published
                    published.update(publish(jobs).by_type)
                    text, _ = exporter.fetch()
                    sample = Sample(
                        minute + 1,
                        sum(published.values()),
                        exporter.count_from(text) - start_count,
                        exporter.rss_bytes(),
                        count_samples(text),
                        live_workers(text),
                    )
                    samples.append(sample)
                    print(
                        f"minute {sample.minute:3d}: published {sample.published:>10,} "
                        f"counted {sample.counted:>10,} RSS {sample.rss_bytes / 2**20:6.1f} MB "
                        f"samples {sample.samples:>7,} live workers {sample.live_workers}",
                        flush=True,
                    )
                total = sum(published.values())
                final = phases.wait_count(exporter, start_count + total, timeout=120, stall=30)
                counted = final.counted - start_count
            finally:
                exporter.stop()
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    growth = (last.rss_bytes - first.rss_bytes) / 2**20
    print(
        f"\npublished {total:,} events, counted {counted:,}, lost {total - counted:,}; "
        f"RSS {first.rss_bytes / 2**20:.1f} MB after minute 1, "
        f"{last.rss_bytes / 2**20:.1f} MB at the end ({growth:+.1f} MB)"
    )
    return 0 if counted == total else 1
