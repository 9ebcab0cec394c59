"""Paired mode of the bench runner (`python -m bench.run paired`): interleaved drains on Redis,
every contender draining the same backlog in each round.

`bench.run` measures consumers one after another, minutes apart; on a shared machine the
drain rates wander by up to 1.5x between minutes, so a ratio of two medians measured apart
cannot decide a target like "0.8x the floor". Here the noise falls on all contenders alike,
as `bench.tracker ingest` does in one process with alternating chunks:

- every selected consumer runs at once (each its own fresh process, warmed up as bench.run
  does); on Redis every pub/sub subscriber gets its own copy of each message;
- each round pauses them all (SIGSTOP), publishes ONE backlog of N events (a steady stream,
  as bench.run's drains), which Redis buffers once per subscriber, then resumes them one at
  a time: each drains alone with Redis (the others stopped, those done stopped again), timed
  and its CPU counted exactly as `phases.drain` does;
- the order rotates every round, so no contender is always first or last;
- reported: per round each rate and CPU per event, and each ratio to the floor (and to the
  baseline); then the median and min-max of the per-round ratios.

    python -m bench.run paired --consumers floor,baseline,before,exporter \\
        --before-src /tmp/before/src --events 300000 --rounds 5

Redis only: RabbitMQ drops event messages after 5 s (`event_queue_ttl`), so a backlog cannot
wait while other consumers drain theirs. Redis must hold N events per subscriber (measured:
~530 bytes an event, ~150 MB per subscriber at N = 300,000); the run prints what it measured.
Single-threaded; every wait is bounded by `--timeout`.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import phases
from bench.consumers import CLOCK_TICKS, ConsumerProcess, cpu_seconds_of
from bench.phases import broker_server
from bench.report import fmt_rate, fmt_us, markdown_table
from bench.stream import StreamSpec

REFERENCES = ("floor", "baseline")  # ratios are to these, when they run
# Two floor contenders: `floor` (redis-py's read_response, one message per call) and
# `floor-socket` (64 kB socket reads into hiredis' Reader). With both, each round's "floor" is
# the faster of the two, and the read_response drain is kept as `floor-read`: the floor is the
# least any reader needs, so a slower floor reader would flatter the exporter.
SOCKET_FLOOR = "floor-socket"
READ_FLOOR = "floor-read"


def best_floor(drains: dict[str, phases.DrainResult]) -> None:
    """With both floor contenders drained, make `floor` the faster, per round, in place."""
    if "floor" not in drains or SOCKET_FLOOR not in drains:
        return
    drains[READ_FLOOR] = drains["floor"]
    drains["floor"] = max(drains[READ_FLOOR], drains[SOCKET_FLOOR], key=lambda d: d.rate)


def columns(kinds: Sequence[str]) -> list[str]:
    """The table's consumer columns: with both floors, the best, then each contender."""
    if "floor" not in kinds or SOCKET_FLOOR not in kinds:
        return list(kinds)
    out = [k for k in kinds if k != SOCKET_FLOOR]
    at = out.index("floor") + 1
    return [*out[:at], READ_FLOOR, SOCKET_FLOOR, *out[at:]]


def rotation(kinds: Sequence[str], round_: int) -> list[str]:
    """The drain order of round `round_` (from 0): `kinds` rotated left by one per round, so
    over len(kinds) rounds every contender drains once in every position."""
    shift = round_ % len(kinds) if kinds else 0
    return [*kinds[shift:], *kinds[:shift]]


def pairs(kinds: Sequence[str]) -> list[tuple[str, str]]:
    """(contender, reference) pairs to report: every other consumer against the floor, then
    every non-reference consumer against the baseline."""
    out = [(k, "floor") for k in kinds if k != "floor"] if "floor" in kinds else []
    if "baseline" in kinds:
        floors = (READ_FLOOR, SOCKET_FLOOR)
        out += [(k, "baseline") for k in kinds if k not in REFERENCES and k not in floors]
    return out


@dataclass
class Spread:
    """The median and range of per-round values."""

    median: float
    low: float
    high: float
    rounds: int


def spread(values: Sequence[float]) -> Spread:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return Spread(math.nan, math.nan, math.nan, 0)
    return Spread(statistics.median(finite), min(finite), max(finite), len(finite))


def rate_ratio(contender: float, reference: float) -> float:
    """How fast the contender drained, as a share of the reference's rate."""
    return contender / reference if reference > 0 else math.nan


def cpu_ratio(contender_us: float, reference_us: float) -> float:
    """The same by CPU: the reference's µs per event over the contender's (so that, like the
    rate ratio, 0.8x means the contender takes in 0.8x as many events per CPU second)."""
    return reference_us / contender_us if contender_us > 0 else math.nan


@dataclass
class BacklogMemory:
    """Redis memory with every subscriber paused and the backlog buffered for each."""

    used_before: int  # used_memory after pausing, before publishing
    used_after: int
    output_buffers: list[int]  # `omem` of each pub/sub client (bytes not yet in the kernel)


@dataclass
class Round:
    order: list[str]
    build_seconds: float
    drains: dict[str, phases.DrainResult]
    memory: BacklogMemory | None = None
    # While each drain was timed: cores busy with anything but that consumer and Redis (other
    # people's work on a shared machine), and cores the hypervisor took (steal).
    others: dict[str, float] = field(default_factory=dict)
    steal: dict[str, float] = field(default_factory=dict)


def machine_cpu(proc_stat: str | None = None) -> tuple[float, float]:
    """CPU seconds the whole machine has been busy (all cores), and stolen by the hypervisor,
    from /proc/stat's first line: user nice system idle iowait irq softirq steal ..."""
    text = Path("/proc/stat").read_text() if proc_stat is None else proc_stat
    ticks = [int(v) for v in text.split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


@dataclass
class OtherLoad:
    """What else ran on the machine while one consumer drained (see Round.others)."""

    redis_pid: int
    machine0: float = 0.0
    steal0: float = 0.0
    redis0: float = 0.0
    consumer0: float = 0.0
    started: float = 0.0

    def start(self, consumer: ConsumerProcess) -> None:
        self.machine0, self.steal0 = machine_cpu()
        self.redis0, self.consumer0 = cpu_seconds_of(self.redis_pid), consumer.cpu_seconds()
        self.started = time.monotonic()

    def stop(self, consumer: ConsumerProcess) -> tuple[float, float]:
        """(cores busy with other work, cores stolen) since start()."""
        machine, steal = machine_cpu()
        ours = cpu_seconds_of(self.redis_pid) - self.redis0
        ours += consumer.cpu_seconds() - self.consumer0
        seconds = max(time.monotonic() - self.started, 1e-9)
        others = max(0.0, machine - self.machine0 - ours)
        return others / seconds, (steal - self.steal0) / seconds


def round_ratios(
    rounds: Sequence[Round], contender: str, reference: str
) -> tuple[list[float], list[float]]:
    """Per-round (rate ratios, CPU ratios) of `contender` against `reference`, over the rounds
    in which both drained."""
    rates, cpus = [], []
    for r in rounds:
        a, b = r.drains.get(contender), r.drains.get(reference)
        if a is None or b is None:
            continue
        rates.append(rate_ratio(a.rate, b.rate))
        cpus.append(cpu_ratio(a.cpu_us_per_event, b.cpu_us_per_event))
    return rates, cpus


def backlog_memory(port: int, used_before: int) -> BacklogMemory:
    import redis

    client = redis.Redis(port=port)
    try:
        used = int(client.info("memory")["used_memory"])
        buffers = [
            int(c.get("omem", 0))
            for c in client.client_list()
            if int(c.get("psub", 0)) or int(c.get("sub", 0))
        ]
    finally:
        client.close()
    return BacklogMemory(used_before, used, buffers)


def redis_info(port: int, section: str, key: str) -> int:
    import redis

    client = redis.Redis(port=port)
    try:
        return int(client.info(section)[key])
    finally:
        client.close()


def settle(consumers: Mapping[str, ConsumerProcess], quiet: float = 0.5) -> dict[str, int]:
    """Every consumer's count once none has moved for `quiet` s: each warm-up also reached
    the consumers already running, which may still be counting it."""
    deadline = time.monotonic() + 60
    counts = {kind: c.count() for kind, c in consumers.items()}
    while True:
        time.sleep(quiet)
        now = {kind: c.count() for kind, c in consumers.items()}
        if now == counts:
            return now
        if time.monotonic() > deadline:
            raise RuntimeError("the consumers' counts did not settle within 60 s")
        counts = now


def one_round(
    consumers: Mapping[str, ConsumerProcess],
    order: Sequence[str],
    broker: phases.Broker,
    opts: phases.Options,
    events: int,
    timeout: float,
    poll_interval: float,
) -> Round:
    bases = settle(consumers)
    assert broker.redis_port is not None
    broker.set_pubsub_limit(phases.REDIS_PUBSUB_UNLIMITED)
    try:
        for consumer in consumers.values():
            consumer.pause()
        before = redis_info(broker.redis_port, "memory", "used_memory")
        report = phases.publish_backlog(broker, opts, events)
        done = Round(list(order), report.seconds, {}, backlog_memory(broker.redis_port, before))
        load = OtherLoad(redis_info(broker.redis_port, "server", "process_id"))
        for kind in order:
            consumer = consumers[kind]
            load.start(consumer)
            start = phases.resume_timed(consumer, bases[kind])
            done.drains[kind] = phases.time_drain(consumer, start, report, timeout, poll_interval)
            done.others[kind], done.steal[kind] = load.stop(consumer)
            consumer.pause()  # alone on the machine: the next one drains without it
        best_floor(done.drains)
    finally:
        for consumer in consumers.values():
            if consumer.paused:
                with contextlib.suppress(ProcessLookupError):  # it died: the error says so
                    consumer.resume()
        broker.set_pubsub_limit(phases.REDIS_PUBSUB_DEFAULT)
    return done


@dataclass
class Settings:
    consumers: tuple[str, ...]
    events: int
    rounds: int
    drain_poll: float
    processes: int
    timeout: float
    before_src: Path | None = None


@dataclass
class Report:
    settings: Settings
    rounds: list[Round] = field(default_factory=list)
    error: str | None = None


def run(s: Settings) -> Report:
    opts = phases.Options(processes=s.processes, spec=StreamSpec())
    report = Report(s)
    with tempfile.TemporaryDirectory(prefix="celery-exporter-paired-") as tmpdir:
        tmp = Path(tmpdir)
        print("== redis: starting server", flush=True)
        with broker_server("redis", tmp / "redis") as broker:
            try:
                with warmed_consumers(s.consumers, s.before_src, broker, tmp, opts) as consumers:
                    for n in range(s.rounds):
                        order = rotation(s.consumers, n)
                        print(f"== round {n + 1}/{s.rounds}: {', '.join(order)}", flush=True)
                        done = one_round(
                            consumers, order, broker, opts, s.events, s.timeout, s.drain_poll
                        )
                        report.rounds.append(done)
                        print("   " + round_line(done, columns(s.consumers)), flush=True)
            except Exception as exc:  # print the rounds done so far, and why it stopped
                report.error = f"{type(exc).__name__}: {exc}"
                print(f"   FAILED: {report.error}", flush=True)
    return report


@contextlib.contextmanager
def warmed_consumers(
    kinds: Sequence[str],
    before_src: Path | None,
    broker: phases.Broker,
    tmp: Path,
    opts: phases.Options,
) -> Iterator[dict[str, ConsumerProcess]]:
    """Every contender started and warmed up on `broker`; each one stopped on the way out,
    also when a later one fails to start."""
    consumers: dict[str, ConsumerProcess] = {}
    try:
        for kind in kinds:
            print(f"== starting and warming up {kind}", flush=True)
            src = before_src if kind == "before" else None
            consumers[kind] = ConsumerProcess(kind, broker.url, tmp / "logs", src=src)
            consumers[kind].start()
            phases.warm_up(consumers[kind], broker, opts)
        yield consumers
    finally:
        for consumer in consumers.values():
            consumer.stop()


def round_line(r: Round, kinds: Sequence[str]) -> str:
    return ", ".join(
        f"{k} {fmt_rate(r.drains[k].rate)}/s ({fmt_us(r.drains[k].cpu_us_per_event)} µs)"
        for k in kinds
        if k in r.drains
    )


def fmt_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def drain_cell(d: phases.DrainResult | None) -> str:
    if d is None:
        return "-"
    lost = f", {d.lost:,} lost" if d.lost else ""
    return f"{fmt_rate(d.rate)}/s ({fmt_us(d.cpu_us_per_event)} µs{lost})"


def others_cell(r: Round) -> str:
    if not r.others:
        return "-"
    return f"{max(r.others.values()):.2f} ({max(r.steal.values(), default=0.0):.2f})"


def render_table(report: Report) -> str:
    s = report.settings
    kinds = columns(s.consumers)
    compared = pairs(kinds)
    # The backlog's build time says how loaded the machine was in that round.
    header = ["round", "order", "backlog", "others", *kinds, *(f"{a}/{b}" for a, b in compared)]
    rows = [header]
    for n, r in enumerate(report.rounds, 1):
        row = [str(n), ", ".join(r.order), f"{r.build_seconds:.1f}s", others_cell(r)]
        row += [drain_cell(r.drains.get(k)) for k in kinds]
        for a, b in compared:
            rates, cpus = round_ratios([r], a, b)
            row.append(f"{fmt_ratio(rates[0])} ({fmt_ratio(cpus[0])})" if rates else "-")
        rows.append(row)
    median_row, range_row = ["median", "", "", ""], ["min-max", "", "", ""]
    for k in kinds:
        rate = spread([r.drains[k].rate for r in report.rounds if k in r.drains])
        cpu = spread([r.drains[k].cpu_us_per_event for r in report.rounds if k in r.drains])
        median_row.append(f"{fmt_rate(rate.median)}/s ({fmt_us(cpu.median)} µs)")
        span = f"{fmt_rate(rate.low)}-{fmt_rate(rate.high)}/s"
        range_row.append(f"{span} ({fmt_us(cpu.low)}-{fmt_us(cpu.high)} µs)")
    for a, b in compared:
        by_rate, by_cpu = (spread(v) for v in round_ratios(report.rounds, a, b))
        median_row.append(f"**{fmt_ratio(by_rate.median)}** ({fmt_ratio(by_cpu.median)})")
        range_row.append(
            f"{by_rate.low:.2f}-{fmt_ratio(by_rate.high)} "
            f"({by_cpu.low:.2f}-{fmt_ratio(by_cpu.high)})"
        )
    rows += [median_row, range_row]
    out = [
        f"## redis, paired drains: {s.events:,} events, {len(report.rounds)} rounds",
        "",
        *markdown_table(rows),
    ]
    out += ["", *notes(report)]
    return "\n".join(out)


def notes(report: Report) -> list[str]:
    out = [
        "- backlog: seconds to publish it (a busy machine takes longer); others: the most cores "
        "busy with anything but the draining consumer and Redis during one of the round's "
        "drains (in brackets: cores stolen by the hypervisor)",
        "- drains: rate (CPU µs per event); ratios: rate a/b (by CPU: b's µs per event / a's); "
        "median and min-max rows: of the per-round values, not ratios of medians",
    ]
    memories = [r.memory for r in report.rounds if r.memory is not None]
    if memories:
        grown = max(m.used_after - m.used_before for m in memories)
        buffers = [b for m in memories for b in m.output_buffers]
        per_event = grown / max(len(memories[0].output_buffers), 1) / report.settings.events
        out.append(
            f"- Redis memory with the backlog buffered: used_memory +{grown / 2**20:,.0f} MB "
            f"at most ({per_event:,.0f} bytes per event per subscriber); output buffers "
            f"{min(buffers) / 2**20:,.0f}-{max(buffers) / 2**20:,.0f} MB per subscriber "
            "(`omem`; a few MB more wait in each socket's kernel buffers)"
        )
    # With both floors, `floor` is one of them again: count each drain once.
    lost = [
        (n, k, d.lost)
        for n, r in enumerate(report.rounds, 1)
        for k, d in r.drains.items()
        if not (k == "floor" and READ_FLOOR in r.drains)
    ]
    for n, kind, count in lost:
        if count:
            out.append(f"- round {n}: {kind} did not count {count:,} events in time")
    if report.error:
        out.append(f"- stopped early: {report.error}")
    return out


def to_json(report: Report, text: str, seconds: float) -> dict[str, Any]:
    summary = {}
    for a, b in pairs(columns(report.settings.consumers)):
        rates, cpus = round_ratios(report.rounds, a, b)
        summary[f"{a}/{b}"] = {
            "rate_ratios": rates,
            "cpu_ratios": cpus,
            "rate": asdict(spread(rates)),
            "cpu": asdict(spread(cpus)),
        }
    return {
        "settings": asdict(report.settings),
        "rounds": [asdict(r) for r in report.rounds],
        "ratios": summary,
        "error": report.error,
        "text": text,
        "seconds": seconds,
    }
