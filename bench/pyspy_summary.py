"""Summarise a py-spy `--format raw` profile (collapsed stacks) by thread and function.

`bench.run --profile` records the exporter while it drains a backlog; this prints, per thread,
its share of samples, then the functions with the most self time and the most inclusive time,
so "where does the time per event go" has a direct answer.

    python -m bench.pyspy_summary bench/results/profile-redis-*.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

THREAD = re.compile(r"^thread \(\d+\): ([^;]*)")
LINE_NUMBER = re.compile(r":\d+\)$")


def parse(text: str) -> list[tuple[str, list[str], int]]:
    """(thread name, frames outermost first without line numbers, samples) per stack."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        match = THREAD.match(frames[0])
        thread = match.group(1) if match else frames[0]
        names = [LINE_NUMBER.sub(")", frame) for frame in frames[1:]]
        stacks.append((thread, names, int(count)))
    return stacks


def summarise(text: str, top: int, thread_filter: str | None) -> str:
    stacks = parse(text)
    total = sum(n for _, _, n in stacks) or 1
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for thread, frames, n in stacks:
        threads[re.sub(r"-\d+", "-N", thread)] += n
        if thread_filter and thread_filter not in thread:
            continue
        if frames:
            self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{total} samples", "", "threads:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in threads.most_common()]
    scope = f" (thread {thread_filter!r})" if thread_filter else ""
    out += ["", f"self time{scope}:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    out += ["", f"inclusive time{scope}:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a py-spy raw profile.")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only stacks of threads whose name contains this")
    args = parser.parse_args(argv)
    print(summarise(args.profile.read_text(), args.top, args.thread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
