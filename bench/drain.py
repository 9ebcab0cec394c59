"""Drain mode of the bench runner (`python -m bench.run drain`): the exporter against celery's
own Receiver, the bare-client floor (and Flower, and the exporter of an earlier commit) on real
brokers, one consumer after another; and scrape mode (`python -m bench.run scrape`): the render
time of a large exposition alone.

For each consumer in turn, in the same run: event-to-metric latency, drain rate of a paused
backlog, the highest sustained live rate with no loss; for the exporter also RSS across many
unique tasks and the render time of a large exposition. Prints one table per broker with
ratios against the references, and the raw numbers go under bench/results/ (bench.run).
Single-threaded: the consumers and publishers are subprocesses; every wait is bounded by
`timeout`.

On Redis the bench raises `client-output-buffer-limit pubsub` to unlimited (CONFIG SET) while
it builds a backlog for a paused consumer, and restores the default (32 MB hard, 8 MB for 60 s)
for the live-rate search, where being cut off by that limit is exactly the loss we look for.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import phases
from bench.consumers import EXPORTERS, ConsumerProcess
from bench.phases import broker_server
from bench.report import RESULTS_DIR, fmt_mb, fmt_ms, fmt_rate, fmt_us, markdown_table
from bench.stream import StreamSpec


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
    broker: phases.Broker, opts: phases.Options, names: int, workers: int, scrapes: int, tmp: Path
) -> phases.ExpositionResult:
    cap = str(max(names, workers) * 2)
    flags = ["--max-task-names", cap, "--max-workers", cap]
    process = ConsumerProcess("exporter", broker.url, tmp / "logs", flags)
    try:
        process.start()
        phases.warm_up(process, broker, opts, events=200)
        return phases.exposition(process, broker, opts, names, workers, scrapes)
    finally:
        process.stop()


def expo_line(expo: phases.ExpositionResult) -> str:
    return (
        f"- large exposition: {expo.samples:,} samples, {expo.bytes / 2**20:.1f} MB, "
        f"scrape p50 {fmt_ms(expo.p50)}, p99 {fmt_ms(expo.p99)}"
    )


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
    return "\n".join([f"## {broker}", "", *markdown_table(lines)])


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
        out.append(expo_line(expo))
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
                    expo = measure_exposition(
                        broker, opts, s.expo_names, s.expo_workers, s.expo_scrapes, tmp / name
                    )
            text = render_table(name, results) + "\n\n" + render_details(name, results, expo)
            print(text, flush=True)
            texts.append(text)
            report["brokers"][name] = {
                "results": [asdict(r) for r in results],
                "exposition": asdict(expo) if expo else None,
            }
    report["text"] = "\n\n".join(texts)
    return report


@dataclass
class ScrapeSettings:
    brokers: tuple[str, ...]
    names: int  # task names in the exposition
    workers: int  # worker hosts
    scrapes: int  # full scrapes timed
    processes: int


def run_scrape(s: ScrapeSettings) -> dict[str, Any]:
    """Scrape mode: on each broker a fresh exporter fed `names` x `workers` label sets, then
    `scrapes` full scrapes timed (the large exposition of drain mode, alone)."""
    opts = phases.Options(s.processes, 1, StreamSpec())
    report: dict[str, Any] = {"settings": asdict(s), "brokers": {}}
    lines = []
    with tempfile.TemporaryDirectory(prefix="celery-exporter-scrape-") as tmpdir:
        tmp = Path(tmpdir)
        for name in s.brokers:
            print(f"== {name}: starting server", flush=True)
            with broker_server(name, tmp / name) as broker:
                expo = measure_exposition(broker, opts, s.names, s.workers, s.scrapes, tmp / name)
            lines.append(f"{name}: " + expo_line(expo)[2:])
            print(lines[-1], flush=True)
            report["brokers"][name] = asdict(expo)
    report["text"] = "\n".join(lines)
    return report
