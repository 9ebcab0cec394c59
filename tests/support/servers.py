"""Real broker servers and Celery workers for integration tests, each managed by PID.

Every process is started on free loopback ports with its state in a temporary directory and is
stopped by its own PID (SIGTERM, a wait, then SIGKILL), so tests never touch processes that
other people on the same machine are running. Waits poll a condition against a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class ServerError(RuntimeError):
    """A server or worker did not start or stop within its deadline."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll `condition` until it holds; raise ServerError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise ServerError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(step)


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_gone(pid: int) -> bool:
    return not pid_alive(pid)


def child_pids(pid: int) -> list[int]:
    """All descendants of `pid` (children first, then theirs), read from /proc."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    pending.append(int(child))
    return found


def terminate_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM `pid`, wait for it to go, SIGKILL it if it does not."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not pid_alive(pid), timeout, f"PID {pid} to exit")
    except ServerError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 5.0, f"PID {pid} to die after SIGKILL")


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class RedisServer:
    """A daemonised redis-server on a free loopback port, without persistence."""

    def __init__(self, tmp_dir: Path, port: int | None = None) -> None:
        self.dir = tmp_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.pidfile = self.dir / f"redis-{self.port}.pid"
        self.logfile = self.dir / f"redis-{self.port}.log"
        self.pid = 0

    @classmethod
    def start(cls, tmp_dir: Path, port: int | None = None) -> RedisServer:
        server = cls(tmp_dir, port)
        server._launch()
        return server

    def _launch(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        subprocess.run(
            [
                "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--daemonize", "yes",
                "--pidfile", str(self.pidfile), "--logfile", str(self.logfile),
                "--dir", str(self.dir),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _read_pid(self.pidfile) is not None, 10.0, "redis pidfile")
        self.pid = _read_pid(self.pidfile) or 0
        wait_for(self.ping, 10.0, f"redis on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def is_running(self) -> bool:
        return self.pid > 0 and pid_alive(self.pid)

    def stop(self) -> None:
        if self.pid:
            terminate_pid(self.pid)

    def kill(self) -> None:
        if self.pid:
            kill_pid(self.pid)
            wait_for(lambda: not pid_alive(self.pid), 5.0, "redis to die")

    def restart(self) -> None:
        """Stop (if running) and start again on the same port: an empty server."""
        self.stop()
        self._launch()


class RabbitMQServer:
    """A RabbitMQ node with its own epmd, both on free loopback ports, state in `tmp_dir`.

    Its own epmd (on its own port) keeps it apart from any other node on the machine, and
    lets us stop that epmd by PID, since a node-started epmd outlives the node.
    """

    def __init__(self, tmp_dir: Path) -> None:
        self.dir = tmp_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"rabbit{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.pidfile = self.dir / "rabbit.pid"
        self.pid = 0
        self.epmd: subprocess.Popen[bytes] | None = None
        (self.dir / "home").mkdir(exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[].\n")

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.dir / "home"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.pidfile),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
        )
        return env

    @classmethod
    def start(cls, tmp_dir: Path, timeout: float = 60.0) -> RabbitMQServer:
        server = cls(tmp_dir)
        server.boot(timeout)
        return server

    def boot(self, timeout: float) -> None:
        """Start epmd and the node; on any failure stop what did start."""
        try:
            self._start_epmd()
            self._launch(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_epmd(self) -> None:
        self.epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.epmd_port), 10.0, "epmd")

    def _launch(self, timeout: float = 60.0) -> None:
        self.pidfile.unlink(missing_ok=True)
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _read_pid(self.pidfile) is not None, timeout, "rabbitmq pidfile")
        self.pid = _read_pid(self.pidfile) or 0
        wait_for(self.ping, timeout, f"rabbitmq AMQP on port {self.port}", step=0.25)

    def ping(self) -> bool:
        """True once an AMQP connection opens: the listener starts last in the boot."""
        import amqp

        if not _port_open(self.port):
            return False
        conn = amqp.Connection(f"127.0.0.1:{self.port}", connect_timeout=2)
        try:
            conn.connect()
            return True
        except (OSError, amqp.exceptions.AMQPError):
            return False
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run rabbitmqctl against this node; returns stdout."""
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result.stdout

    def is_running(self) -> bool:
        return self.pid > 0 and pid_alive(self.pid)

    def _stop_node(self, kill: bool = False) -> None:
        if not self.pid:
            return
        # The node's helpers (erl_child_setup, inet_gethost) go with it; collect them first.
        helpers = child_pids(self.pid)
        if kill:
            kill_pid(self.pid)
            wait_for(lambda: not pid_alive(self.pid), 5.0, "rabbitmq to die")
        else:
            terminate_pid(self.pid, timeout=30.0)
        for pid in helpers:
            if pid_alive(pid):
                kill_pid(pid)

    def stop(self) -> None:
        """Stop the node and its epmd."""
        self._stop_node()
        if self.epmd is not None:
            self.epmd.terminate()
            try:
                self.epmd.wait(5)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait(5)

    def kill(self) -> None:
        """SIGKILL the node (an outage); epmd stays so restart() works."""
        self._stop_node(kill=True)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the node (if running) and start it again on the same ports and state."""
        self._stop_node()
        self._launch(timeout)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class CeleryWorker:
    """A real `celery worker` (prefork, -E) on tests.support.workload_app, logging to a file."""

    def __init__(
        self,
        broker_url: str,
        log_dir: Path,
        *,
        queues: Sequence[str] = ("celery",),
        concurrency: int = 1,
        hostname: str = "w1@%h",
        events: bool = True,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.broker_url = broker_url
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.hostname = hostname.replace("%h", socket.gethostname())
        self.events = events
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logfile = log_dir / f"worker-{self.hostname.replace('@', '_')}.log"
        args = [
            sys.executable, "-m", "celery", "-A", "tests.support.workload_app", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency),
            "--queues", ",".join(self.queues), "--hostname", self.hostname,
            "--loglevel", "INFO", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        if events:
            args.append("-E")
        args.extend(extra_args)
        self.args = args
        self.env = dict(os.environ)
        self.env["CE_TEST_BROKER_URL"] = broker_url
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), self.env.get("PYTHONPATH", "")) if p
        )
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def start(self) -> CeleryWorker:
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> CeleryWorker:
        """Wait for the worker's "ready." line; fail with the log's tail if it exits first."""

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise ServerError(f"worker {self.hostname} exited:\n{self.log()[-3000:]}")
            return f"{self.hostname} ready." in self.log()

        try:
            wait_for(ready, timeout, f"worker {self.hostname}", step=0.1)
        except ServerError as exc:
            raise ServerError(f"{exc}\n{self.log()[-3000:]}") from None
        return self

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM); SIGKILL the worker and its pool if it outlasts `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the main process and its pool children: a crashed worker, no goodbye."""
        if self.process is None or self.process.poll() is not None:
            return
        children = child_pids(self.process.pid)
        self.process.kill()
        for pid in children:
            kill_pid(pid)
        self.process.wait(10)
        for pid in children:
            wait_for(functools.partial(pid_gone, pid), 5.0, f"pool child {pid} to die")


WorkerFactory = Callable[..., CeleryWorker]
