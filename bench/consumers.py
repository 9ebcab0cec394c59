"""The consumers under test as processes: the exporter, the baseline Receiver, the floor
(bare client library), Flower, and optionally the exporter of an earlier commit ("before").

Each runs as one subprocess that the runner can pause (SIGSTOP) and resume (SIGCONT) by PID,
whose RSS and CPU time are read from /proc, and whose running event count is read over HTTP:
the exporter's `celery_exporter_events_total` summed over `event`, Flower's
`flower_events_total` summed over its labels, the baseline's and the floor's bare integer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.servers import REPO_ROOT, free_port, terminate_pid, wait_for

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EXPORTERS = ("exporter", "before")  # "before": the exporter from `--before-src`
# These serve `<count> <time of last event>` instead of a metrics page.
COUNT_PAGES = ("baseline", "floor", "floor-default", "floor-socket")
KINDS = ("floor", "floor-default", "floor-socket", "baseline", "before", "exporter", "flower")


def sum_samples(exposition: str, name: str) -> float:
    """Sum of every sample of metric `name` (any labels) in a text exposition."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[-1] if "}" not in line else line.rsplit("}", 1)[1])
    return total


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU of process `pid` (all threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def count_samples(exposition: str) -> int:
    return sum(1 for line in exposition.splitlines() if line and not line.startswith("#"))


class ConsumerProcess:
    """One consumer subprocess; `kind` is exporter, before, baseline, floor or flower."""

    def __init__(
        self,
        kind: str,
        broker_url: str,
        log_dir: Path,
        extra_args: Sequence[str] = (),
        src: Path | None = None,
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.src = src or REPO_ROOT / "src"  # the exporter's source tree to run
        self.url = f"http://127.0.0.1:{self.port}/" + ("" if kind in COUNT_PAGES else "metrics")
        if kind in EXPORTERS:
            argv = [
                sys.executable,
                "-m",
                "celery_exporter",
                "--broker-url",
                broker_url,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "WARNING",
            ]
        elif kind in COUNT_PAGES:
            module = "bench.baseline" if kind == "baseline" else "bench.floor"
            argv = [sys.executable, "-m", module, "--broker-url", broker_url]
            argv += ["--port", str(self.port)]
            if kind == "floor-default":
                argv.append("--default-push-handler")
            elif kind == "floor-socket":
                argv.append("--socket-reader")
        elif kind == "flower":
            argv = [sys.executable, "-m", "celery", "--broker", broker_url, "flower"]
            argv += ["--address=127.0.0.1", f"--port={self.port}", "--logging=warning"]
        else:
            raise ValueError(f"unknown consumer kind {kind!r}")
        self.argv = [*argv, *extra_args]
        self.metric = "flower_events_total" if kind == "flower" else "celery_exporter_events_total"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logfile = log_dir / f"{kind}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        # flower_events_total counts task events only (not worker-online/heartbeat/offline)
        self.counts_worker_events = kind != "flower"

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def start(self, timeout: float = 60.0) -> ConsumerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.src), str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def answers() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                self.count()
                return True
            return False

        try:
            wait_for(answers, timeout, f"{self.kind} HTTP on port {self.port}", step=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")[-chars:]
        return ""

    def fetch(self, timeout: float = 30.0) -> tuple[str, float]:
        """The count page (the exposition, for exporter and Flower) and seconds it took."""
        started = time.perf_counter()
        with urllib.request.urlopen(self.url, timeout=timeout) as response:
            text: str = response.read().decode()
        return text, time.perf_counter() - started

    def count_from(self, text: str) -> int:
        if self.kind in COUNT_PAGES:
            return int(text.split(maxsplit=1)[0])
        return int(sum_samples(text, self.metric))

    def last_event_from(self, text: str) -> float | None:
        """Unix time at which the consumer handled its latest event, if it says (Flower
        does not)."""
        if self.kind in COUNT_PAGES:
            return float(text.split()[1])
        if self.kind in EXPORTERS:
            name = "celery_exporter_last_event_timestamp_seconds"
            return sum_samples(text, name) or None
        return None

    def expected(self, by_type: Mapping[str, int]) -> int:
        """How many of these published events this consumer's count includes."""
        return sum(
            n for kind, n in by_type.items() if self.counts_worker_events or kind[:5] == "task-"
        )

    def count(self) -> int:
        return self.count_from(self.fetch()[0])

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all threads), from /proc/PID/stat."""
        return cpu_seconds_of(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.paused:
            self.resume()
        terminate_pid(self.pid, timeout=10.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
