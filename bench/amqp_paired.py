"""Paired drains and a shared steady stream on RabbitMQ: the exporter against the py-amqp floor.

`bench.paired` does this for Redis with one backlog that every subscriber drains in turn. On
RabbitMQ that cannot work: event queues drop messages after `event_queue_ttl` (5 s), and a
paused consumer with no_ack already holds thousands of messages in its socket buffer. So
each round, for each contender in a rotating order:

- settle: every consumer runs until the counts stop moving (flushing what its socket held),
  then all are paused (SIGSTOP);
- one backlog of N events is published (small enough to drain within the TTL; the drain
  reports `lost` otherwise), and the contender alone is resumed and timed until it counted
  them, its CPU counted as `phases.drain` does; scraped every `--drain-poll` s meanwhile,
  which gives the scrape latency while draining;

then, with every consumer running, one steady stream at `--rate` events/s for `--window` s,
which all of them take at once: each one's CPU per event over the same seconds. Reported: per
round each drain rate, CPU per event (drain and steady), each ratio to the floor, the median
and range of the per-round ratios, scrape p50/p99 while draining, and RSS at the end.

    python -m bench.run amqp-paired --consumers floor,before,exporter \\
        --before-src /tmp/before/src --events 15000 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import phases
from bench.consumers import ConsumerProcess
from bench.loadgen import publish as publish_jobs
from bench.loadgen import split_jobs
from bench.paired import cpu_ratio, rate_ratio, rotation, settle, spread, warmed_consumers
from bench.phases import broker_server
from bench.report import RESULTS_DIR, fmt_rate, fmt_us
from bench.stream import StreamSpec

KINDS = ("floor", "baseline", "before", "exporter")


@dataclass
class Steady:
    events: int
    seconds: float
    cpu_us: dict[str, float]  # per consumer, over the same window
    lost: dict[str, int]


@dataclass
class Round:
    order: list[str]
    drains: dict[str, phases.DrainResult] = field(default_factory=dict)
    steady: Steady | None = None


@dataclass
class Settings:
    consumers: tuple[str, ...]
    events: int
    rounds: int
    rate: float
    window: float
    drain_poll: float
    processes: int
    timeout: float
    before_src: Path | None = None


@dataclass
class Report:
    settings: Settings
    rounds: list[Round] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def pause_all(consumers: Mapping[str, ConsumerProcess]) -> None:
    for consumer in consumers.values():
        if not consumer.paused:
            consumer.pause()


def resume_all(consumers: Mapping[str, ConsumerProcess]) -> None:
    for consumer in consumers.values():
        if consumer.paused:
            with contextlib.suppress(ProcessLookupError):  # it died: the next step says so
                consumer.resume()


def one_drain(
    consumers: Mapping[str, ConsumerProcess], kind: str, broker: phases.Broker, s: Settings
) -> phases.DrainResult:
    resume_all(consumers)
    bases = settle(consumers)  # what sat in socket buffers since the last drain is counted now
    pause_all(consumers)
    opts = phases.Options(processes=s.processes, spec=StreamSpec())
    report = phases.publish_backlog(broker, opts, s.events)
    start = phases.resume_timed(consumers[kind], bases[kind])
    try:
        return phases.time_drain(consumers[kind], start, report, s.timeout, s.drain_poll)
    finally:
        consumers[kind].pause()


def steady(consumers: Mapping[str, ConsumerProcess], broker: phases.Broker, s: Settings) -> Steady:
    resume_all(consumers)
    bases = settle(consumers)
    cpu0 = {kind: c.cpu_seconds() for kind, c in consumers.items()}
    spec = replace(StreamSpec(), seed=time.monotonic_ns() % 1_000_000, online_at_start=False)
    jobs = split_jobs(broker.url, spec, 1, duration=s.window, rate=s.rate)
    report = publish_jobs(jobs)
    counts = settle(consumers)
    cpu: dict[str, float] = {}
    lost: dict[str, int] = {}
    for kind, consumer in consumers.items():
        expected = consumer.expected(report.by_type)
        counted = counts[kind] - bases[kind]
        events = round(counted * report.events / max(expected, 1))
        cpu[kind] = (consumer.cpu_seconds() - cpu0[kind]) / max(events, 1) * 1e6
        lost[kind] = max(0, report.events - events)
    return Steady(report.events, report.seconds, cpu, lost)


def run(s: Settings) -> Report:
    report = Report(s)
    opts = phases.Options(processes=s.processes, spec=StreamSpec())
    with tempfile.TemporaryDirectory(prefix="celery-exporter-amqp-paired-") as tmpdir:
        tmp = Path(tmpdir)
        print("== rabbitmq: starting server", flush=True)
        with broker_server("rabbitmq", tmp / "rabbitmq") as broker:
            try:
                with warmed_consumers(s.consumers, s.before_src, broker, tmp, opts) as consumers:
                    try:
                        for n in range(s.rounds):
                            order = rotation(s.consumers, n)
                            print(f"== round {n + 1}/{s.rounds}: {', '.join(order)}", flush=True)
                            done = Round(list(order))
                            for kind in order:
                                done.drains[kind] = one_drain(consumers, kind, broker, s)
                            done.steady = steady(consumers, broker, s)
                            report.rounds.append(done)
                            print("   " + round_line(done, s.consumers), flush=True)
                        resume_all(consumers)
                        report.rss_mb = {k: c.rss_bytes() / 2**20 for k, c in consumers.items()}
                    finally:
                        resume_all(consumers)  # a paused consumer would not stop
            except Exception as exc:  # print the rounds done so far, and why it stopped
                report.error = f"{type(exc).__name__}: {exc}"
                print(f"   FAILED: {report.error}", flush=True)
    return report


def round_line(r: Round, kinds: Sequence[str]) -> str:
    cells = []
    for k in kinds:
        d = r.drains.get(k)
        st = r.steady.cpu_us.get(k) if r.steady else None
        if d is not None:
            cells.append(
                f"{k} {fmt_rate(d.rate)}/s ({fmt_us(d.cpu_us_per_event)} µs, steady "
                f"{fmt_us(st)} µs, lost {d.lost})"
            )
    return "; ".join(cells)


def ratios(report: Report, kind: str, reference: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"rate": [], "drain_cpu": [], "steady_cpu": []}
    for r in report.rounds:
        d, ref = r.drains.get(kind), r.drains.get(reference)
        if d is None or ref is None:
            continue
        out["rate"].append(rate_ratio(d.rate, ref.rate))
        out["drain_cpu"].append(cpu_ratio(d.cpu_us_per_event, ref.cpu_us_per_event))
        if r.steady is not None:
            out["steady_cpu"].append(cpu_ratio(r.steady.cpu_us[kind], r.steady.cpu_us[reference]))
    return out


def render(report: Report) -> str:
    kinds = report.settings.consumers
    lines = [
        f"RabbitMQ, {report.settings.events} events a drain, steady "
        f"{report.settings.rate:.0f}/s for {report.settings.window:.0f} s, "
        f"{len(report.rounds)} rounds",
        "consumer   drain/s (median)  drain µs/ev  steady µs/ev  scrape p50/p99 ms  RSS MB",
    ]
    for k in kinds:
        drains = [r.drains[k] for r in report.rounds if k in r.drains]
        steadies = [r.steady.cpu_us[k] for r in report.rounds if r.steady]
        if not drains:
            continue
        p50 = statistics.median(d.scrape_p50 for d in drains) * 1e3
        p99 = max(d.scrape_p99 for d in drains) * 1e3
        lines.append(
            f"{k:<10} {fmt_rate(statistics.median(d.rate for d in drains)):>16}"
            f"  {fmt_us(statistics.median(d.cpu_us_per_event for d in drains)):>11}"
            f"  {fmt_us(statistics.median(steadies) if steadies else None):>12}"
            f"  {p50:>8.1f}/{p99:<8.1f}  {report.rss_mb.get(k, 0.0):>6.1f}"
        )
    if "floor" in kinds:
        lines.append("ratio to the floor, median [min-max] of per-round ratios (1 = floor):")
        for k in kinds:
            if k == "floor":
                continue
            cells = []
            for name, values in ratios(report, k, "floor").items():
                if values:
                    sp = spread(values)
                    cells.append(f"{name} {sp.median:.2f}x [{sp.low:.2f}-{sp.high:.2f}]")
            lines.append(f"  {k}: " + ", ".join(cells))
    lines.append(
        "drain: rate = events / seconds to count them; cpu ratio = floor µs / consumer µs "
        "(above 1 = cheaper than the floor)"
    )
    if report.error:
        lines.append(f"stopped early: {report.error}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run amqp-paired", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--consumers", default="floor,exporter")
    parser.add_argument("--events", type=int, default=15000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=3000.0, help="steady stream, events/s")
    parser.add_argument("--window", type=float, default=10.0, help="steady stream, seconds")
    parser.add_argument("--drain-poll", type=float, default=0.25)
    parser.add_argument("--processes", type=int, default=2, help="backlog publishers")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--before-src", type=Path, help="src/ of the code to compare (before)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.consumers.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"--consumers: unknown {unknown}; choose from {', '.join(KINDS)}")
    if "before" in kinds and args.before_src is None:
        parser.error("--consumers before needs --before-src")
    if args.events <= 0 or args.rounds <= 0 or args.rate <= 0 or args.window <= 0:
        parser.error("--events, --rounds, --rate and --window must be positive")
    return Settings(
        kinds,
        args.events,
        args.rounds,
        args.rate,
        args.window,
        args.drain_poll,
        args.processes,
        args.timeout,
        args.before_src,
    )


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    started = time.monotonic()
    report = run(s)
    text = render(report)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"amqp-paired-{time.strftime('%Y%m%d-%H%M%S')}.json"
    data: dict[str, Any] = asdict(report)
    data["settings"]["before_src"] = str(s.before_src) if s.before_src else None
    data["seconds"] = time.monotonic() - started
    data["text"] = text
    out.write_text(json.dumps(data, indent=2, default=str))
    print(f"written {out}")
    return 1 if report.error else 0
