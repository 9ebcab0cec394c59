"""`bench.tracker instructions`: instructions per event of the tracker, this version against
another, counted by valgrind.

On a shared machine the wall clock of `bench.tracker ingest` wanders by 5-10% between runs;
machine instructions do not (within ~1%), so small changes to the hot path can be compared.
Instructions are not time (cache misses and branch mispredictions are not in them), so the
timed benchmark stays the evidence; this is the tool to decide between two ways of writing
a line. Same stream as ingest (seeded), each message decoded just before it is fed,
a fake clock, garbage collection off. Each version runs three times under
`valgrind --tool=callgrind` (feed nothing / the warm-up only / warm-up and steady state), in
parallel (two threads, each waiting on its valgrind child); the differences are the
warm-up's and the steady state's instructions.

    git archive <base-commit> src | tar -x -C /tmp/base
    python -m bench.tracker instructions --baseline-src /tmp/base/src     # ~1-2 min
"""

from __future__ import annotations

import gc
import pickle
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from bench.tracker.ingest import WARMUP, chunks
from bench.tracker.versions import build, current, load_baseline

STEADY = 40_000
PHASES = ("none", "warmup", "all")


def feed(stream: Path, baseline_src: str, phase: str) -> None:
    """The measured child: feed the pickled stream to one version, up to `phase`."""
    gc.disable()
    module: Any = load_baseline(Path(baseline_src)) if baseline_src else current()
    warm, steady = pickle.loads(stream.read_bytes())
    first = orjson.loads(warm[0])
    clock_now: list[float] = [(first[0] if type(first) is list else first)["timestamp"]]

    def clock() -> float:
        clock_now[0] += 0.0003
        return clock_now[0]

    tracker = build(module, clock)
    for part, fed in ((warm, phase != "none"), (steady, phase == "all")):
        for data in part:
            body = orjson.loads(data)  # decoded in every phase: it cancels out
            if fed:
                tracker.record_message(body)


def instructions(stream: Path, baseline_src: str, phase: str) -> int:
    child = [sys.executable, "-m", "bench.tracker", "instructions", "--child", str(stream), phase]
    if baseline_src:
        child += ["--baseline-src", baseline_src]
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *child],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"},
    ).stderr
    match = re.search(r"Collected : (\d+)", out)
    if match is None:
        raise SystemExit(f"no instruction count from valgrind:\n{out[-2000:]}")
    return int(match.group(1))


def run(baseline_src: str) -> int:
    warm: list[bytes] = []
    steady: list[bytes] = []
    events_warm = events_steady = 0
    for bodies, size in chunks(STEADY + WARMUP, seed=7, chunk=1):  # one message each
        if events_warm < WARMUP:
            warm += [orjson.dumps(body) for body in bodies]
            events_warm += size
        else:
            steady += [orjson.dumps(body) for body in bodies]
            events_steady += size
    stream = Path(tempfile.mkdtemp(prefix="tracker-ir-")) / "stream.pickle"
    stream.write_bytes(pickle.dumps((warm, steady)))
    runs = [(version, phase) for version in ("baseline", "current") for phase in PHASES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(
            zip(
                runs,
                pool.map(
                    lambda run: instructions(
                        stream, baseline_src if run[0] == "baseline" else "", run[1]
                    ),
                    runs,
                ),
                strict=True,
            )
        )
    per_event: dict[str, tuple[float, float]] = {}
    for version in ("baseline", "current"):
        warmup = (counts[version, "warmup"] - counts[version, "none"]) / events_warm
        steady_ = (counts[version, "all"] - counts[version, "warmup"]) / events_steady
        per_event[version] = (warmup, steady_)
        print(f"{version}: warm-up {warmup:,.0f} instructions/event, steady {steady_:,.0f}")
    (base_warm, base_steady), (cur_warm, cur_steady) = per_event["baseline"], per_event["current"]
    print(f"steady state: baseline/current {base_steady / cur_steady:.3f}x fewer instructions")
    print(f"first {events_warm:,} events: baseline/current {base_warm / cur_warm:.3f}x")
    return 0
