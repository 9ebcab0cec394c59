"""In-process ingest benchmark of the tracker alone: this version of the code against another.

Both versions are loaded in one process (the baseline's `celery_exporter` package is copied
under another name) and fed the same synthetic stream (bench.stream: 10 workers that come
online at the start, then batched task events and heartbeats), in alternating chunks of a few
thousand events: on a shared machine, load then falls on both alike, which separate runs
minutes apart do not give. Reported: the time for the first WARMUP events (workers come online;
the current code asks them and holds their first task events, which here nobody answers, so
they are counted when MAX_DEFERRED_EVENTS is reached) and the steady-state rate after them.

By default every message is decoded before the run starts, so each event the tracker reads
comes cold from memory, and both versions pay those cache misses. `--warm` decodes each chunk
of WARM_CHUNK events (with orjson, untimed) just before it is fed, as the exporter does with
each message it reads: closer to production, and the tracker's own cost is a larger share.

    git archive <base-commit> src | tar -x -C /tmp/base
    python -m bench.tracker_ingest --baseline-src /tmp/base/src [--warm]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from bench.stream import EventStream, StreamSpec, take

WARMUP = 20_000  # events fed before the steady-state timing starts (up to the next chunk)
CHUNK = 5_000  # events per alternation
WARM_CHUNK = 500  # events per alternation with --warm: decoded, they fit a core's L2 cache


def exporter_module(tracker: ModuleType, name: str, old_name: str | None = None) -> ModuleType:
    """A module of the package `tracker` belongs to (current or baseline): `name` in today's
    layout, else `old_name` in a baseline from before the subpackages."""
    root = tracker.__name__.split(".")[0]
    try:
        return importlib.import_module(f"{root}.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"{root}.{old_name or name}")


def load_baseline(src: Path) -> ModuleType:
    """The baseline's tracker module, as package `celery_exporter_baseline` (it imports only
    relatively, so a renamed copy is a second, independent package)."""
    root = Path(tempfile.mkdtemp(prefix="tracker-baseline-"))
    shutil.copytree(src / "celery_exporter", root / "celery_exporter_baseline")
    sys.path.insert(0, str(root))
    # The tracker moved into the state subpackage; an older baseline has it at the top.
    layout = "state.tracker" if (src / "celery_exporter" / "state").is_dir() else "tracker"
    return importlib.import_module(f"celery_exporter_baseline.{layout}")


def build(module: ModuleType) -> Any:
    config_module = exporter_module(module, "config")
    config = config_module.Config(broker_url="redis://localhost")
    kwargs: dict[str, Any] = {}
    try:
        takes_arrivals = "arrivals" in inspect.signature(module.Tracker).parameters
    except ValueError:  # a mypyc-compiled Tracker (setup.py) has no signature; it takes them
        takes_arrivals = True
    if takes_arrivals:
        arrivals = exporter_module(module, "poll.arrivals", "arrivals")
        kwargs["arrivals"] = arrivals.WorkerArrivals(time.time)  # as app.py wires it
    return module.Tracker(config, clock=time.time, **kwargs)


def chunks(events: int, seed: int, chunk: int = CHUNK) -> list[tuple[list[Any], int]]:
    """The stream's message bodies, cut into runs of about `chunk` events (bodies, events).
    Built once per version: the tracker may trim held events in place."""
    out: list[tuple[list[Any], int]] = []
    bodies: list[Any] = []
    size = 0
    for message in take(EventStream(StreamSpec(seed=seed)).messages(), events):
        bodies.append(message.body)
        size += message.events
        if size >= chunk:
            out.append((bodies, size))
            bodies, size = [], 0
    if bodies:
        out.append((bodies, size))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", action="store_true", help="decode each chunk just before")
    args = parser.parse_args()
    chunk = WARM_CHUNK if args.warm else CHUNK
    import celery_exporter.state.tracker as current

    versions = {"baseline": load_baseline(args.baseline_src), "current": current}
    warm: dict[str, list[float]] = {name: [] for name in versions}
    steady: dict[str, list[float]] = {name: [] for name in versions}
    for round_ in range(args.rounds):
        trackers = {name: build(module) for name, module in versions.items()}
        streams = {name: chunks(args.events + WARMUP, round_, chunk) for name in versions}
        if args.warm:  # each chunk as JSON, decoded just before it is fed
            encoded = [[orjson.dumps(body) for body in bodies] for bodies, _ in streams["current"]]
        gc.freeze()  # the exporter keeps no decoded messages: full collections must not scan them
        spent = dict.fromkeys(versions, 0.0)
        fed = 0
        steady_events = 0
        for index in range(len(streams["current"])):
            for name, tracker in trackers.items():
                bodies = streams[name][index][0]
                if args.warm:
                    bodies = [orjson.loads(data) for data in encoded[index]]
                started = time.perf_counter()
                for body in bodies:
                    tracker.record_message(body)
                spent[name] += time.perf_counter() - started
            size = streams["current"][index][1]
            if fed < WARMUP <= fed + size:
                for name in versions:
                    warm[name].append(spent[name])
                    spent[name] = 0.0
            elif fed >= WARMUP:
                steady_events += size
            fed += size
        for name, tracker in trackers.items():
            if hasattr(tracker, "release_deferred"):
                tracker.release_deferred()
            counted = sum(tracker.snapshot().events.values())
            assert counted == args.events + WARMUP, (name, counted)  # nothing left held or lost
            steady[name].append(steady_events / spent[name])
        gc.unfreeze()
        print(
            f"round {round_ + 1}: steady baseline {steady['baseline'][-1]:,.0f}/s, current "
            f"{steady['current'][-1]:,.0f}/s; first {WARMUP:,} events baseline "
            f"{warm['baseline'][-1] * 1000:.0f} ms, current {warm['current'][-1] * 1000:.0f} ms"
        )
    # Rounds are paired (same stream, chunks interleaved): the median of their ratios.
    ratio = statistics.median(
        c / b for c, b in zip(steady["current"], steady["baseline"], strict=True)
    )
    print(f"steady state: current/baseline {ratio:.3f}x (median of per-round ratios)")
    ratio = statistics.median(c / b for c, b in zip(warm["current"], warm["baseline"], strict=True))
    print(f"first {WARMUP:,} events, time: current/baseline {ratio:.3f}x")


if __name__ == "__main__":
    main()
