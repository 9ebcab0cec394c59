"""Results of `celery-exporter check`: the record of one check, running the links, printing.

Each link of the chain (broker, exporter, Prometheus, Alertmanager, Grafana) is a function that
runs its checks in order and returns their results. Links run at once, each in its own daemon
thread, and the whole run has one deadline: a link still running then is reported as a failure,
so the command ends on time even when a server accepts connections and never answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"


@dataclass(frozen=True)
class Result:
    link: str  # broker, exporter, prometheus, alertmanager, grafana
    name: str  # what was checked, e.g. "rule groups"
    status: str  # OK, FAIL or SKIP (not configured, or nothing to judge)
    reason: str
    fix: str = ""


def ok(link: str, name: str, reason: str) -> Result:
    return Result(link, name, OK, reason)


def fail(link: str, name: str, reason: str, fix: str) -> Result:
    return Result(link, name, FAIL, reason, fix)


def skip(link: str, name: str, reason: str) -> Result:
    return Result(link, name, SKIP, reason)


@dataclass(frozen=True)
class Link:
    name: str
    run: Callable[[], list[Result]]


def run_links(links: Sequence[Link], deadline: float) -> list[Result]:
    """Run every link concurrently; results in the links' order, each link's in its own order."""
    results: dict[str, list[Result]] = {}
    lock = threading.Lock()

    def runner(link: Link) -> None:
        try:
            found = link.run()
        except Exception as exc:  # one broken link must not hide the others' results
            found = [fail(link.name, "check", f"the check itself failed: {exc!r}", "report a bug")]
        with lock:
            results[link.name] = found

    threads = [threading.Thread(target=runner, args=(link,), daemon=True) for link in links]
    end = time.monotonic() + deadline
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    ordered: list[Result] = []
    with lock:
        for link in links:
            ordered.extend(
                results.get(link.name)
                or [
                    fail(
                        link.name,
                        "answer",
                        f"no result within the {deadline:g}s deadline",
                        f"the {link.name} accepts connections but does not answer: check it",
                    )
                ]
            )
    return ordered


def exit_code(results: Sequence[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def summary(results: Sequence[Result], seconds: float) -> dict[str, float]:
    return {
        "passed": sum(r.status == OK for r in results),
        "failed": sum(r.status == FAIL for r in results),
        "skipped": sum(r.status == SKIP for r in results),
        "seconds": round(seconds, 2),
    }


def as_text(results: Sequence[Result], seconds: float) -> str:
    """One line per check: status, link, check, reason and (on failure) the fix; then a summary."""
    link_width = max((len(r.link) for r in results), default=0)
    name_width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        line = f"{r.status:<4}  {r.link:<{link_width}}  {r.name:<{name_width}}  {r.reason}"
        if r.fix:
            line += f" -- fix: {r.fix}"
        lines.append(line)
    counts = summary(results, seconds)
    verdict = "FAILED" if counts["failed"] else "all checks passed"
    lines.append(
        f"{verdict}: {counts['passed']:.0f} ok, {counts['failed']:.0f} failed, "
        f"{counts['skipped']:.0f} skipped in {seconds:.1f}s"
    )
    return "\n".join(lines)


def as_json(results: Sequence[Result], seconds: float) -> str:
    return json.dumps(
        {
            "ok": exit_code(results) == 0,
            "summary": summary(results, seconds),
            "checks": [asdict(r) for r in results],
        },
        indent=2,
    )
