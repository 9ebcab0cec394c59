"""Benchmark runner: the exporter against celery's own Receiver, the bare-client floor (and
Flower, and the exporter of an earlier commit) on real brokers.

Starts its own Redis and RabbitMQ (tests/support/servers.py), then for each consumer in turn, in the
same run: event-to-metric latency, drain rate of a paused backlog, the highest sustained live
rate with no loss; for the exporter also RSS across many unique tasks and the render time of a
large exposition. Prints one table per broker with ratios against the baseline, and writes
the raw numbers as JSON under bench/results/.

    python -m bench.run --quick                 # ~2-3 minutes, Redis and RabbitMQ
    python -m bench.run --brokers redis --events 1000000 --memory-tasks 1000000
    python -m bench.run --quick --consumers baseline,exporter,flower
    python -m bench.run --quick --consumers floor,baseline,before,exporter --before-src DIR

On Redis the bench raises `client-output-buffer-limit pubsub` to unlimited (CONFIG SET) while
it builds a backlog for a paused consumer, and restores the default (32 MB hard, 8 MB for 60 s)
for the live-rate search, where being cut off by that limit is exactly the loss we look for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.servers import RabbitMQServer, RedisServer

from bench import phases
from bench.consumers import EXPORTERS, ConsumerProcess
from bench.stream import StreamSpec

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Settings:
    brokers: tuple[str, ...]
    consumers: tuple[str, ...]
    events: int
    rabbit_events: int
    memory_tasks: int
    rabbit_memory_tasks: int
    drain_repeat: int
    drain_poll: float
    memory_points: int
    live_window: float
    live_steps: int
    latency_rounds: int
    expo_names: int
    expo_workers: int
    expo_scrapes: int
    processes: int
    live_processes: int
    profile: bool
    timeout: float
    before_src: Path | None = None


@dataclass
class ConsumerResult:
    kind: str
    latency: phases.LatencyResult | None = None
    drain: phases.DrainResult | None = None
    scraped: phases.DrainResult | None = None  # a drain while scraped every 0.25 s
    live: phases.LiveResult | None = None
    memory: phases.MemoryResult | None = None
    rss_end: int = 0
    idle_scrape: float | None = None
    restarts: int = 0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def broker_server(name: str, tmp: Path) -> Iterator[phases.Broker]:
    if name == "redis":
        redis = RedisServer.start(tmp / "redis")
        try:
            yield phases.Broker("redis", redis.url, redis_port=redis.port)
        finally:
            redis.stop()
    elif name == "rabbitmq":
        rabbit = RabbitMQServer.start(tmp / "rabbitmq")
        try:
            yield phases.Broker("rabbitmq", rabbit.url)
        finally:
            rabbit.stop()
    else:
        raise ValueError(f"unknown broker {name!r}")


class Running:
    """The consumer under test, restarted (and counted) if a phase killed it."""

    def __init__(
        self,
        kind: str,
        broker: phases.Broker,
        opts: phases.Options,
        tmp: Path,
        src: Path | None = None,
    ) -> None:
        self.kind, self.broker, self.opts, self.tmp, self.src = kind, broker, opts, tmp, src
        self.restarts = 0
        self.process = self._start()

    def _start(self) -> ConsumerProcess:
        process = ConsumerProcess(self.kind, self.broker.url, self.tmp / "logs", src=self.src)
        try:
            process.start()
            phases.warm_up(process, self.broker, self.opts)
        except BaseException:
            process.stop()
            raise
        return process

    def __call__(self) -> ConsumerProcess:
        if self.process.process is None or self.process.process.poll() is not None:
            self.restarts += 1
            self.process = self._start()
        return self.process

    def stop(self) -> None:
        self.process.stop()


def measure_consumer(
    kind: str, broker: phases.Broker, opts: phases.Options, s: Settings, tmp: Path
) -> ConsumerResult:
    result = ConsumerResult(kind)
    running = Running(kind, broker, opts, tmp, s.before_src if kind == "before" else None)
    try:
        # event-to-metric latency includes one scrape; this says how much of it that is
        result.idle_scrape = phases.percentile([running().fetch()[1] for _ in range(5)], 50)
        result.latency = phases.event_latency(running(), broker, s.latency_rounds)
        events = s.events if broker.name == "redis" else s.rabbit_events
        profiler = start_profile(running(), broker, tmp) if s.profile else None
        drains = []
        try:
            for _ in range(s.drain_repeat):
                drains.append(
                    phases.drain(running(), broker, opts, events, s.timeout, s.drain_poll)
                )
        finally:
            if profiler is not None:
                profiler.stop()
        result.drain = sorted(drains, key=lambda d: d.rate)[len(drains) // 2]
        if len(drains) > 1:
            result.notes.append("drain rates: " + ", ".join(f"{d.rate:,.0f}" for d in drains))
        result.scraped = phases.drain(running(), broker, opts, events // 2, s.timeout, 0.25)
        if result.drain.lost:
            result.notes.append(
                f"drain lost {result.drain.lost} events (backlog built in "
                f"{result.drain.build_seconds:.1f}s; RabbitMQ event TTL is 5s)"
            )
        first = max(1000.0, result.drain.rate * 0.8)
        result.live = phases.live_rate(running, broker, opts, first, s.live_window, s.live_steps)
        if kind in EXPORTERS and s.memory_tasks:
            # RabbitMQ drops event messages older than 5 s: keep each backlog small there.
            rabbit = broker.name == "rabbitmq"
            tasks = min(s.memory_tasks, s.rabbit_memory_tasks) if rabbit else s.memory_tasks
            chunk = s.rabbit_events if rabbit else 1_000_000
            result.memory = phases.memory(
                running(), broker, opts, tasks, s.memory_points, s.timeout, chunk
            )
        result.rss_end = running().rss_bytes()
        result.restarts = running.restarts
    finally:
        running.stop()
    return result


class Profile:
    """py-spy recording a consumer's threads while it drains (raw collapsed stacks)."""

    def __init__(self, pid: int, out: Path) -> None:
        import subprocess

        self.out = out
        import shutil

        # py-spy is a pip package: next to this interpreter when its venv is not on PATH.
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.process = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        import signal

        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except Exception:
            self.process.kill()
            self.process.wait(5)


def start_profile(consumer: ConsumerProcess, broker: phases.Broker, tmp: Path) -> Profile:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS_DIR / f"profile-{broker.name}-{consumer.kind}-{stamp}.txt"
    print(f"  profiling {consumer.kind} PID {consumer.pid} -> {out}", flush=True)
    return Profile(consumer.pid, out)


def measure_exposition(
    broker: phases.Broker, opts: phases.Options, s: Settings, tmp: Path
) -> phases.ExpositionResult:
    cap = str(max(s.expo_names, s.expo_workers) * 2)
    flags = ["--max-task-names", cap, "--max-workers", cap]
    process = ConsumerProcess("exporter", broker.url, tmp / "logs", flags)
    try:
        process.start()
        phases.warm_up(process, broker, opts, events=200)
        return phases.exposition(
            process, broker, opts, s.expo_names, s.expo_workers, s.expo_scrapes
        )
    finally:
        process.stop()


def fmt_rate(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def fmt_us(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def fmt_ms(value: float | None) -> str:
    if value is not None and math.isinf(value):
        return "no answer"  # the scrape timed out
    return "-" if value is None or math.isnan(value) else f"{value * 1000:.1f} ms"


def fmt_mb(value: float | None) -> str:
    return "-" if not value else f"{value / 2**20:.0f} MB"


def rows_for(results: list[ConsumerResult]) -> list[tuple[str, list[str], list[float | None]]]:
    """(label, cells per consumer, raw values for ratios)."""

    def collect(getter: Any) -> list[float | None]:
        values: list[float | None] = []
        for r in results:
            try:
                values.append(getter(r))
            except AttributeError:
                values.append(None)
        return values

    def live_cell(r: ConsumerResult) -> str:
        if r.live is None:
            return "-"
        return ("≥ " if r.live.publisher_limited else "") + fmt_rate(r.live.best)

    def mem_cell(r: ConsumerResult) -> str:
        if r.memory is None:
            return fmt_mb(r.rss_end) + " (end)"
        tasks, rss = r.memory.samples[-1]
        return f"{fmt_mb(rss)} @ {tasks:,} tasks"

    drain_rate = collect(lambda r: r.drain.rate)
    cpu = collect(lambda r: r.drain.cpu_us_per_event)
    live = collect(lambda r: r.live.best)
    lat50 = collect(lambda r: r.latency.p50)
    lat99 = collect(lambda r: r.latency.p99)
    idle = collect(lambda r: r.idle_scrape)
    scraped = collect(lambda r: r.scraped.rate)
    scr50 = collect(lambda r: r.scraped.scrape_p50)
    scr99 = collect(lambda r: r.scraped.scrape_p99)
    rss = collect(lambda r: r.memory.samples[-1][1] if r.memory else r.rss_end)
    return [
        ("drain rate (events/s)", [fmt_rate(v) for v in drain_rate], drain_rate),
        ("drain CPU per event (µs)", [fmt_us(v) for v in cpu], cpu),
        ("drain lost events", [str(r.drain.lost if r.drain else "-") for r in results], []),
        ("drain rate, scraped 4x/s (events/s)", [fmt_rate(v) for v in scraped], scraped),
        ("sustained live rate, no loss (events/s)", [live_cell(r) for r in results], live),
        ("event-to-metric latency p50", [fmt_ms(v) for v in lat50], lat50),
        ("event-to-metric latency p99", [fmt_ms(v) for v in lat99], lat99),
        ("idle scrape (count page) p50", [fmt_ms(v) for v in idle], idle),
        ("scrape while draining (4x/s) p50", [fmt_ms(v) for v in scr50], scr50),
        ("scrape while draining (4x/s) p99", [fmt_ms(v) for v in scr99], scr99),
        ("RSS", [mem_cell(r) for r in results], rss),
    ]


REFERENCES = ("floor", "floor-default", "baseline")  # every other consumer is a ratio of these


def render_table(broker: str, results: list[ConsumerResult]) -> str:
    kinds = [r.kind for r in results]
    refs = [(ref, kinds.index(ref)) for ref in REFERENCES if ref in kinds]
    others = [i for i, k in enumerate(kinds) if k not in REFERENCES]
    header = ["metric", *kinds]
    header += [f"{kinds[i]}/{ref}" for ref, _ in refs for i in others]
    lines = [header]
    for label, cells, raw in rows_for(results):
        row = [label, *cells]
        for _, base in refs:
            for i in others:
                a = raw[i] if raw else None
                b = raw[base] if raw else None
                if a is not None and b is not None and not math.isnan(a + b) and b != 0:
                    row.append(f"{a / b:.2f}x")
                else:
                    row.append("")
        lines.append(row)
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    out = [f"## {broker}", ""]
    for n, row in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def render_details(broker: str, results: list[ConsumerResult], expo: Any) -> str:
    out = []
    for r in results:
        if r.drain:
            d = r.drain
            out.append(
                f"- {r.kind}: drained {d.events:,} events in {d.seconds:.2f}s "
                f"(backlog built in {d.build_seconds:.1f}s)"
            )
        if r.live:
            trials = ", ".join(
                f"{t.rate:,.0f}/s({t.achieved:,.0f}) {'ok' if t.ok else 'FAIL'}"
                for t in r.live.trials
            )
            out.append(f"  live trials (target(achieved)): {trials}")
        if r.memory:
            pts = ", ".join(f"{n:,}: {fmt_mb(b)}" for n, b in r.memory.samples)
            out.append(f"  RSS by unique tasks: {pts} ({r.memory.seconds:.0f}s)")
        for note in r.notes:
            out.append(f"  note: {note}")
        if r.restarts:
            out.append(f"  note: restarted {r.restarts}x after being cut off")
    if expo is not None:
        out.append(
            f"- large exposition: {expo.samples:,} samples, {expo.bytes / 2**20:.1f} MB, "
            f"scrape p50 {fmt_ms(expo.p50)}, p99 {fmt_ms(expo.p99)}"
        )
    return "\n".join(out)


def run(s: Settings) -> dict[str, Any]:
    opts = phases.Options(s.processes, s.live_processes, StreamSpec())
    report: dict[str, Any] = {"settings": asdict(s), "brokers": {}}
    texts = []
    with tempfile.TemporaryDirectory(prefix="celery-exporter-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for name in s.brokers:
            print(f"== {name}: starting server", flush=True)
            with broker_server(name, tmp / name) as broker:
                results = []
                for kind in s.consumers:
                    print(f"== {name}: measuring {kind}", flush=True)
                    started = time.monotonic()
                    try:
                        results.append(measure_consumer(kind, broker, opts, s, tmp / name))
                    except Exception as exc:  # one consumer failing must not lose the others
                        print(f"   {kind} FAILED: {type(exc).__name__}: {exc}", flush=True)
                        results.append(ConsumerResult(kind, notes=[f"failed: {exc!r}"]))
                    print(f"   {kind} done in {time.monotonic() - started:.0f}s", flush=True)
                expo = None
                if "exporter" in s.consumers and s.expo_names:
                    print(f"== {name}: large exposition", flush=True)
                    expo = measure_exposition(broker, opts, s, tmp / name)
            text = render_table(name, results) + "\n\n" + render_details(name, results, expo)
            print(text, flush=True)
            texts.append(text)
            report["brokers"][name] = {
                "results": [asdict(r) for r in results],
                "exposition": asdict(expo) if expo else None,
            }
    report["text"] = "\n\n".join(texts)
    return report


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description="Benchmark the exporter against baselines.")
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--consumers", default="baseline,exporter")
    parser.add_argument("--quick", action="store_true", help="small sizes: ~2-3 minutes")
    parser.add_argument("--events", type=int, help="backlog size N for the Redis drain")
    parser.add_argument("--rabbit-events", type=int, help="backlog for RabbitMQ (5 s TTL)")
    parser.add_argument("--memory-tasks", type=int, help="unique tasks for the RSS curve (0: off)")
    parser.add_argument("--rabbit-memory-tasks", type=int, help="the same, on RabbitMQ")
    parser.add_argument("--memory-points", type=int, default=5)
    parser.add_argument("--drain-repeat", type=int, help="drains per consumer; median kept")
    parser.add_argument(
        "--drain-poll", type=float, default=5.0, help="seconds between scrapes while draining"
    )
    parser.add_argument("--live-window", type=float, help="seconds per live-rate trial")
    parser.add_argument("--live-steps", type=int, help="live-rate trials per consumer")
    parser.add_argument("--latency-rounds", type=int)
    parser.add_argument("--expo-names", type=int, help="task names for the big exposition")
    parser.add_argument("--expo-workers", type=int, help="worker hosts for the big exposition")
    parser.add_argument("--processes", type=int, default=2, help="publisher processes")
    parser.add_argument("--live-processes", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="py-spy each consumer's drains")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on any one wait")
    parser.add_argument(
        "--before-src",
        type=Path,
        help="src/ of an earlier checkout, run as consumer `before` (e.g. from git archive)",
    )
    a = parser.parse_args(argv)
    if "before" in a.consumers.split(",") and a.before_src is None:
        parser.error("consumer `before` needs --before-src")
    quick = a.quick

    def pick(value: Any, quick_value: Any, full_value: Any) -> Any:
        return value if value is not None else (quick_value if quick else full_value)

    return Settings(
        brokers=tuple(b for b in a.brokers.split(",") if b),
        consumers=tuple(c for c in a.consumers.split(",") if c),
        events=pick(a.events, 100_000, 500_000),
        rabbit_events=pick(a.rabbit_events, 40_000, 50_000),
        memory_tasks=pick(a.memory_tasks, 50_000, 1_000_000),
        rabbit_memory_tasks=pick(a.rabbit_memory_tasks, 20_000, 100_000),
        drain_repeat=pick(a.drain_repeat, 1, 3),
        drain_poll=a.drain_poll,
        memory_points=a.memory_points if not quick else 3,
        live_window=pick(a.live_window, 3.0, 10.0),
        live_steps=pick(a.live_steps, 3, 6),
        latency_rounds=pick(a.latency_rounds, 10, 50),
        expo_names=pick(a.expo_names, 150, 300),
        expo_workers=pick(a.expo_workers, 10, 10),
        expo_scrapes=3 if quick else 10,
        processes=a.processes,
        live_processes=a.live_processes,
        profile=a.profile,
        timeout=a.timeout,
        before_src=a.before_src,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    started = time.monotonic()
    report = run(settings)
    report["seconds"] = time.monotonic() - started
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\ntotal {report['seconds']:.0f}s; raw numbers in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
