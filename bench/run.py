"""The bench runner: one command, one mode per measurement, one set of shared options.

    python -m bench.run drain [--quick] [--brokers redis,rabbitmq] [--consumers ...]
    python -m bench.run paired --consumers floor,baseline,before,exporter --before-src DIR
    python -m bench.run scrape [--brokers redis] [--expo-names 300 --expo-workers 10]
    python -m bench.run poll [--queues 100] [--polls 50] [--brokers redis]
    python -m bench.run soak [--minutes 30 --rate 3000] [--broker rabbitmq]

- drain (bench/drain.py): each consumer in turn, minutes apart: drain rate and CPU of a paused
  backlog, drain while scraped, sustained live rate, event-to-metric latency, RSS, and a large
  exposition; tables of ratios against the floor and celery's Receiver.
- paired (bench/paired.py): Redis drains of one backlog per round by every contender, one at a
  time, order rotated: per-round ratios, seconds apart, for targets like "0.8x the floor".
- scrape (bench/drain.py): the large exposition alone: render time of a full scrape.
- poll (bench/poll.py): one queue-length poll of 100 queues, and its scrape.
- soak (bench/soak.py): a steady rate for many minutes with worker churn; exits 1 on loss.

Each mode starts its own brokers on free loopback ports and stops them by PID; drain, paired
and scrape write their raw numbers to bench/results/<mode>-<time>.json. Bad arguments give a
one-line error and exit 2. Runs in the calling thread; every wait is bounded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import amqp_paired, drain, paired, poll, soak
from bench.consumers import KINDS
from bench.report import save

BROKERS = ("redis", "rabbitmq")
# Per-mode defaults of shared options. Not set_defaults(): parents share their Action objects
# with every mode, so one mode's set_defaults would change the others' defaults too.
DEFAULTS: dict[str, dict[str, Any]] = {
    "drain": {"brokers": BROKERS, "consumers": ("baseline", "exporter"), "processes": 2},
    "paired": {"consumers": ("floor", "floor-socket", "baseline", "exporter"), "processes": 2},
    "scrape": {"brokers": ("redis",), "processes": 2},
    "poll": {"brokers": BROKERS},
    "soak": {"processes": 1},
}


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def names(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def shared_parsers() -> dict[str, argparse.ArgumentParser]:
    """Option groups more than one mode takes, each defined once."""
    publishing = argparse.ArgumentParser(add_help=False)
    publishing.add_argument("--processes", type=at_least_one, help="publisher processes")
    bounded = argparse.ArgumentParser(add_help=False)
    bounded.add_argument(
        "--timeout", type=positive, default=600.0, help="bound on any one wait (s)"
    )
    brokers = argparse.ArgumentParser(add_help=False)
    brokers.add_argument("--brokers", type=names, help="comma-separated: redis, rabbitmq")
    contenders = argparse.ArgumentParser(add_help=False)
    contenders.add_argument(
        "--consumers", type=names, help=f"comma-separated, of: {', '.join(KINDS)}"
    )
    contenders.add_argument(
        "--before-src",
        type=Path,
        help="src/ of an earlier checkout, run as consumer `before` (e.g. from git archive)",
    )
    contenders.add_argument(
        "--drain-poll",
        type=positive,
        default=5.0,
        help="seconds between scrapes while draining",
    )
    exposition = argparse.ArgumentParser(add_help=False)
    exposition.add_argument("--expo-names", type=at_least_zero, help="task names (0: off)")
    exposition.add_argument("--expo-workers", type=at_least_one, help="worker hosts")
    return {
        "publishing": publishing,
        "bounded": bounded,
        "brokers": brokers,
        "contenders": contenders,
        "exposition": exposition,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    p = shared_parsers()

    d = modes.add_parser(
        "drain",
        parents=[p["brokers"], p["contenders"], p["exposition"], p["publishing"], p["bounded"]],
        help="every phase, one consumer after another",
    )
    d.add_argument("--quick", action="store_true", help="small sizes: ~2-3 minutes")
    d.add_argument("--events", type=at_least_one, help="backlog size N for the Redis drain")
    d.add_argument("--rabbit-events", type=at_least_one, help="backlog for RabbitMQ (5 s TTL)")
    d.add_argument("--memory-tasks", type=at_least_zero, help="unique tasks for RSS (0: off)")
    d.add_argument("--rabbit-memory-tasks", type=at_least_zero, help="the same, on RabbitMQ")
    d.add_argument("--memory-points", type=at_least_one, default=5)
    d.add_argument("--drain-repeat", type=at_least_one, help="drains per consumer; median kept")
    d.add_argument("--live-window", type=positive, help="seconds per live-rate trial")
    d.add_argument("--live-steps", type=at_least_one, help="live-rate trials per consumer")
    d.add_argument("--latency-rounds", type=at_least_one)
    d.add_argument("--live-processes", type=at_least_one, default=1)
    d.add_argument("--profile", action="store_true", help="py-spy each consumer's drains")

    r = modes.add_parser(
        "paired",
        parents=[p["contenders"], p["publishing"], p["bounded"]],
        help="Redis: every contender drains the same backlog per round, order rotated",
    )
    r.add_argument("--events", type=at_least_one, default=300_000, help="backlog size N")
    r.add_argument("--rounds", type=at_least_one, default=5)

    s = modes.add_parser(
        "scrape",
        parents=[p["brokers"], p["exposition"], p["publishing"]],
        help="the render time of a large exposition",
    )
    s.add_argument("--scrapes", type=at_least_one, default=10, help="full scrapes timed")

    q = modes.add_parser("poll", parents=[p["brokers"]], help="one queue-length poll")
    q.add_argument("--queues", type=at_least_one, default=100)
    q.add_argument("--polls", type=at_least_one, default=50)

    k = modes.add_parser("soak", parents=[p["publishing"]], help="minutes of load with churn")
    k.add_argument("--minutes", type=at_least_one, default=30)
    k.add_argument("--rate", type=positive, default=3000.0, help="events/s in total")
    k.add_argument("--workers", type=at_least_one, default=20, help="workers alive at any time")
    k.add_argument("--churn", type=at_least_zero, default=4, help="workers replaced per minute")
    k.add_argument("--broker", choices=BROKERS, default="redis")
    k.add_argument(
        "--exporter-arg",
        action="append",
        default=[],
        help="extra exporter flag (repeatable), e.g. --exporter-arg=--worker-timeout=30",
    )
    modes.add_parser(
        "amqp-paired",
        add_help=False,  # its own options, parsed by bench.amqp_paired (`amqp-paired --help`)
        help="RabbitMQ: paired drains and a shared steady stream against the py-amqp floor",
    )
    for mode in (d, r, s, q, k):  # errors after parsing name the mode's own usage
        mode.set_defaults(mode_parser=mode)
    return parser


def check(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """What argparse's types cannot see: names against the known ones, pairs of options."""
    unknown = [b for b in getattr(a, "brokers", ()) if b not in BROKERS]
    if unknown:
        parser.error(f"unknown broker {unknown[0]!r}; choose from {', '.join(BROKERS)}")
    if getattr(a, "brokers", None) == ():
        parser.error("--brokers names no broker")
    consumers = getattr(a, "consumers", None)
    if consumers is None:
        return
    unknown = [k for k in consumers if k not in KINDS]
    if unknown:
        parser.error(f"unknown consumer {unknown[0]!r}; choose from {', '.join(KINDS)}")
    twice = len(set(consumers)) != len(consumers)
    if a.mode == "paired" and (twice or len(consumers) < 2):
        parser.error("--consumers needs at least two different consumers")
    if twice or not consumers:
        parser.error("--consumers names each consumer once")
    if "before" in consumers:
        if a.before_src is None:
            parser.error("consumer `before` needs --before-src")
        if not (a.before_src / "celery_exporter").is_dir():
            parser.error(f"--before-src {a.before_src}: no celery_exporter package in it")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    a = build_parser().parse_args(argv)
    for name, value in DEFAULTS[a.mode].items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    check(a.mode_parser, a)
    return a


def drain_settings(a: argparse.Namespace) -> drain.Settings:
    def pick(value: Any, quick_value: Any, full_value: Any) -> Any:
        return value if value is not None else (quick_value if a.quick else full_value)

    return drain.Settings(
        brokers=a.brokers,
        consumers=a.consumers,
        events=pick(a.events, 100_000, 500_000),
        rabbit_events=pick(a.rabbit_events, 40_000, 50_000),
        memory_tasks=pick(a.memory_tasks, 50_000, 1_000_000),
        rabbit_memory_tasks=pick(a.rabbit_memory_tasks, 20_000, 100_000),
        drain_repeat=pick(a.drain_repeat, 1, 3),
        drain_poll=a.drain_poll,
        memory_points=a.memory_points if not a.quick else 3,
        live_window=pick(a.live_window, 3.0, 10.0),
        live_steps=pick(a.live_steps, 3, 6),
        latency_rounds=pick(a.latency_rounds, 10, 50),
        expo_names=pick(a.expo_names, 150, 300),
        expo_workers=pick(a.expo_workers, 10, 10),
        expo_scrapes=3 if a.quick else 10,
        processes=a.processes,
        live_processes=a.live_processes,
        profile=a.profile,
        timeout=a.timeout,
        before_src=a.before_src,
    )


def paired_settings(a: argparse.Namespace) -> paired.Settings:
    return paired.Settings(
        consumers=a.consumers,
        events=a.events,
        rounds=a.rounds,
        drain_poll=a.drain_poll,
        processes=a.processes,
        timeout=a.timeout,
        before_src=a.before_src,
    )


def timed(mode: str, measure: Callable[[], tuple[dict[str, Any], int]]) -> int:
    """Run one mode, print where its raw numbers went; its exit status."""
    started = time.monotonic()
    report, status = measure()
    report["seconds"] = time.monotonic() - started
    out = save(mode, report)
    print(f"\ntotal {report['seconds']:.0f}s; raw numbers in {out}")
    return status


def run_drain(a: argparse.Namespace) -> tuple[dict[str, Any], int]:
    return drain.run(drain_settings(a)), 0


def run_paired(a: argparse.Namespace) -> tuple[dict[str, Any], int]:
    started = time.monotonic()
    report = paired.run(paired_settings(a))
    text = paired.render_table(report)
    print(text, flush=True)
    status = 0 if report.error is None and report.rounds else 1
    return paired.to_json(report, text, time.monotonic() - started), status


def run_scrape(a: argparse.Namespace) -> tuple[dict[str, Any], int]:
    names_ = 300 if a.expo_names is None else a.expo_names
    workers = 10 if a.expo_workers is None else a.expo_workers
    s = drain.ScrapeSettings(a.brokers, names_, workers, a.scrapes, a.processes)
    return drain.run_scrape(s), 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["amqp-paired"]:  # its options are its own; argparse would claim --help
        return amqp_paired.main(args[1:])
    a = parse_args(args)
    if a.mode == "poll":
        rows = poll.run(poll.Settings(a.brokers, a.queues, a.polls))
        return 0 if rows else 1
    if a.mode == "soak":
        settings = soak.Settings(
            a.minutes, a.rate, a.workers, a.churn, a.processes, a.broker, tuple(a.exporter_arg)
        )
        return soak.soak(settings)
    measure = {"drain": run_drain, "paired": run_paired, "scrape": run_scrape}[a.mode]
    # drain's files keep their old prefix, so earlier results sort beside new ones
    prefix = {"drain": "bench"}.get(a.mode, a.mode)
    return timed(prefix, lambda: measure(a))


if __name__ == "__main__":
    sys.exit(main())
