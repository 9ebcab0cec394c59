"""`bench.tracker ingest`: in-process ingest benchmark of the tracker alone, this version of the
code against another.

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
    python -m bench.tracker ingest --baseline-src /tmp/base/src [--warm]

In the calling thread; the run is bounded by --events x --rounds.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from bench.stream import EventStream, StreamSpec, take
from bench.tracker.versions import build, current, load_baseline, releaser

WARMUP = 20_000  # events fed before the steady-state timing starts (up to the next chunk)
CHUNK = 5_000  # events per alternation
WARM_CHUNK = 500  # events per alternation with --warm: decoded, they fit a core's L2 cache


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


def run(baseline_src: Path, events: int, rounds: int, warm_chunks: bool) -> int:
    chunk = WARM_CHUNK if warm_chunks else CHUNK
    versions = {"baseline": load_baseline(baseline_src), "current": current()}
    warm: dict[str, list[float]] = {name: [] for name in versions}
    steady: dict[str, list[float]] = {name: [] for name in versions}
    for round_ in range(rounds):
        trackers = {name: build(module) for name, module in versions.items()}
        streams = {name: chunks(events + WARMUP, round_, chunk) for name in versions}
        if warm_chunks:  # each chunk as JSON, decoded just before it is fed
            encoded = [[orjson.dumps(body) for body in bodies] for bodies, _ in streams["current"]]
        gc.freeze()  # the exporter keeps no decoded messages: full collections must not scan them
        spent = dict.fromkeys(versions, 0.0)
        fed = 0
        steady_events = 0
        for index in range(len(streams["current"])):
            for name, tracker in trackers.items():
                bodies = streams[name][index][0]
                if warm_chunks:
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
            releaser(tracker)()
            counted = sum(tracker.snapshot().events.values())
            assert counted == events + WARMUP, (name, counted)  # nothing left held or lost
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
    return 0
