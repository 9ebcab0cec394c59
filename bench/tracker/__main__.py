"""Command line of the tracker tool: `python -m bench.tracker ingest|diff|instructions`.

    git archive <base-commit> src | tar -x -C /tmp/base
    python -m bench.tracker ingest --baseline-src /tmp/base/src [--warm] [--rounds 5]
    python -m bench.tracker diff --baseline-src /tmp/base/src [--seeds 3]
    python -m bench.tracker instructions --baseline-src /tmp/base/src

Bad arguments (or a --baseline-src without a celery_exporter package) give a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.run import at_least_one
from bench.tracker import diff, ingest, instructions


def source(text: str) -> Path:
    path = Path(text)
    if not (path / "celery_exporter").is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no celery_exporter package in it")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tracker",
        description="The tracker of these sources against another version's.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    versions = argparse.ArgumentParser(add_help=False)
    versions.add_argument(
        "--baseline-src",
        type=source,
        help="src/ of another checkout (either package layout), e.g. from git archive",
    )
    i = commands.add_parser("ingest", parents=[versions], help="events/s, chunks interleaved")
    i.add_argument("--events", type=at_least_one, default=300_000)
    i.add_argument("--rounds", type=at_least_one, default=5)
    i.add_argument("--warm", action="store_true", help="decode each chunk just before")
    d = commands.add_parser("diff", parents=[versions], help="that both count the same")
    d.add_argument("--seeds", type=at_least_one, default=1)
    n = commands.add_parser(
        "instructions", parents=[versions], help="instructions per event (valgrind)"
    )
    # the measured child of each valgrind run: the pickled stream and the phase to feed
    n.add_argument("--child", nargs=2, metavar=("STREAM", "PHASE"), help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.command == "instructions" and a.child:
        instructions.feed(Path(a.child[0]), str(a.baseline_src or ""), a.child[1])
        return 0
    if a.baseline_src is None:
        parser.error(f"{a.command} needs --baseline-src")
    if a.command == "ingest":
        return ingest.run(a.baseline_src, a.events, a.rounds, a.warm)
    if a.command == "diff":
        return diff.run(a.baseline_src, a.seeds)
    return instructions.run(str(a.baseline_src))


if __name__ == "__main__":
    sys.exit(main())
