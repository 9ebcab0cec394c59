"""Broker setups users run, as real servers: Redis with a password over TLS, Redis Sentinel (a
master, a replica and three sentinels, all with passwords), and RabbitMQ over TLS.

Every process listens on free loopback ports with its state in a temporary directory and is
stopped by its own PID (the helpers in tests/support/servers.py), so nothing touches other people's
servers on the same machine. Certificates come from tests/support/certs.py, made at test time.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.certs import Pki
from tests.support.servers import (
    RabbitMQServer,
    free_port,
    kill_pid,
    pid_alive,
    terminate_pid,
    wait_for,
)

MASTER_NAME = "ce-master"


def _pid_from(path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return 0


class RedisNode:
    """One redis-server daemon (a server or, with `sentinel=True`, a sentinel) run from a
    config file; `client` builds a redis-py client for it (password, TLS), used to ping."""

    def __init__(
        self,
        directory: Path,
        name: str,
        config: list[str],
        client: Callable[[], Any],
        port: int,
        sentinel: bool = False,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port
        self.sentinel = sentinel
        self.client = client
        self.pidfile = self.dir / f"{name}.pid"
        self.logfile = self.dir / f"{name}.log"
        self.conf = self.dir / f"{name}.conf"
        self.config = [
            "bind 127.0.0.1",
            "daemonize yes",
            f"pidfile {self.pidfile}",
            f"logfile {self.logfile}",
            f"dir {self.dir}",
            *([] if sentinel else ["save ''", "appendonly no"]),
            *config,
        ]
        self.pid = 0

    def start(self, timeout: float = 15.0) -> RedisNode:
        self.pidfile.unlink(missing_ok=True)
        # A sentinel rewrites its config file, so each start gets a fresh one.
        self.conf.write_text("\n".join(self.config) + "\n")
        command = ["redis-server", str(self.conf), *(["--sentinel"] if self.sentinel else [])]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wait_for(lambda: _pid_from(self.pidfile) > 0, timeout, f"{self.name} pidfile")
        self.pid = _pid_from(self.pidfile)
        wait_for(self.ping, timeout, f"{self.name} on port {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        try:
            client = self.client()
        except (redis.RedisError, OSError):
            return False
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def is_running(self) -> bool:
        return self.pid > 0 and pid_alive(self.pid)

    def stop(self) -> None:
        if self.pid and pid_alive(self.pid):
            terminate_pid(self.pid)

    def kill(self) -> None:
        if self.pid:
            kill_pid(self.pid)
            wait_for(lambda: not pid_alive(self.pid), 5.0, f"{self.name} to die")


def redis_tls_server(
    directory: Path,
    pki: Pki,
    password: str,
    client_certificates: bool,
    extra_config: Sequence[str] = (),
) -> RedisNode:
    """A TLS-only Redis (no plain port) with a password; with `client_certificates` it
    refuses clients that present no certificate signed by the test CA. `extra_config` lines
    come last, so they override (e.g. `bind`)."""
    import redis

    port = free_port()

    def client() -> Any:
        return redis.Redis(
            port=port,
            password=password,
            ssl=True,
            ssl_ca_certs=str(pki.ca_cert),
            ssl_certfile=str(pki.client_cert),
            ssl_keyfile=str(pki.client_key),
            socket_timeout=2,
        )

    config = [
        "port 0",
        f"tls-port {port}",
        f"tls-cert-file {pki.server_cert}",
        f"tls-key-file {pki.server_key}",
        f"tls-ca-cert-file {pki.ca_cert}",
        f"tls-auth-clients {'yes' if client_certificates else 'no'}",
        f"requirepass {password}",
        *extra_config,
    ]
    return RedisNode(directory, f"redis-tls-{port}", config, client, port)


class Sentinels:
    """A master, one replica and three sentinels watching them as MASTER_NAME.

    The data nodes require `password`, the sentinels `sentinel_password` (the exporter's
    `sentinel_kwargs`). Failure detection is fast (1 s down-after, 5 s failover timeout),
    so a failover completes in a few seconds.
    """

    def __init__(self, directory: Path, password: str, sentinel_password: str) -> None:
        import redis

        self.password = password
        self.sentinel_password = sentinel_password

        def data_client(port: int) -> Callable[[], Any]:
            return lambda: redis.Redis(port=port, password=password, socket_timeout=2)

        def sentinel_client(port: int) -> Callable[[], Any]:
            return lambda: redis.Redis(port=port, password=sentinel_password, socket_timeout=2)

        master_port, replica_port = free_port(), free_port()
        auth = [f"requirepass {password}", f"masterauth {password}"]
        self.master = RedisNode(
            directory,
            "master",
            [f"port {master_port}", *auth],
            data_client(master_port),
            master_port,
        )
        self.replica = RedisNode(
            directory,
            "replica",
            [f"port {replica_port}", *auth, f"replicaof 127.0.0.1 {master_port}"],
            data_client(replica_port),
            replica_port,
        )
        self.sentinels = []
        for index in range(3):
            port = free_port()
            config = [
                f"port {port}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2",
                f"sentinel auth-pass {MASTER_NAME} {password}",
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
                f"sentinel failover-timeout {MASTER_NAME} 5000",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
                f"requirepass {sentinel_password}",
                f"sentinel sentinel-pass {sentinel_password}",
            ]
            self.sentinels.append(
                RedisNode(directory, f"sentinel-{index}", config, sentinel_client(port), port, True)
            )

    @classmethod
    def start(cls, directory: Path, password: str, sentinel_password: str) -> Sentinels:
        setup = cls(directory, password, sentinel_password)
        try:
            setup.master.start()
            setup.replica.start()
            wait_for(setup._replica_in_sync, 20.0, "the replica to sync with the master")
            for node in setup.sentinels:
                node.start()
            wait_for(setup._sentinels_agree, 20.0, "the sentinels to see each other")
        except BaseException:
            setup.stop()
            raise
        return setup

    def _replica_in_sync(self) -> bool:
        client = self.replica.client()
        try:
            return bool(client.info("replication").get("master_link_status") == "up")
        except OSError:
            return False
        finally:
            client.close()

    def _sentinels_agree(self) -> bool:
        """Every sentinel knows the two others and the replica: ready for a failover."""
        for node in self.sentinels:
            client = node.client()
            try:
                state = client.sentinel_master(MASTER_NAME)
            finally:
                client.close()
            if int(state.get("num-other-sentinels", 0)) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def master_port(self) -> int:
        """The port the sentinels name as master now."""
        client = self.sentinels[0].client()
        try:
            _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        finally:
            client.close()
        return int(port)

    @property
    def url(self) -> str:
        """A `;`-list of every sentinel, the data nodes' password in each (as users write it)."""
        return ";".join(
            f"sentinel://:{self.password}@127.0.0.1:{node.port}/0" for node in self.sentinels
        )

    @property
    def transport_options(self) -> dict[str, Any]:
        return {"master_name": MASTER_NAME, "sentinel_kwargs": {"password": self.sentinel_password}}

    def stop(self) -> None:
        for node in (*self.sentinels, self.replica, self.master):
            node.stop()


class RabbitMQTlsServer(RabbitMQServer):
    """RabbitMQ with a TLS listener beside the plain one, and a vhost and user of its own."""

    def __init__(self, tmp_dir: Path, pki: Pki) -> None:
        super().__init__(tmp_dir)
        self.tls_port = free_port()
        self.config_file = self.dir / "rabbitmq.conf"
        self.config_file.write_text(
            "\n".join(
                [
                    f"listeners.ssl.local = 127.0.0.1:{self.tls_port}",
                    f"ssl_options.cacertfile = {pki.ca_cert}",
                    f"ssl_options.certfile = {pki.server_cert}",
                    f"ssl_options.keyfile = {pki.server_key}",
                    "ssl_options.verify = verify_none",
                    "ssl_options.fail_if_no_peer_cert = false",
                ]
            )
            + "\n"
        )

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["RABBITMQ_CONFIG_FILE"] = str(self.config_file)
        return env

    @classmethod
    def start_tls(cls, tmp_dir: Path, pki: Pki, timeout: float = 90.0) -> RabbitMQTlsServer:
        server = cls(tmp_dir, pki)
        server.boot(timeout)
        return server

    def add_vhost_user(self, vhost: str, user: str, password: str) -> None:
        self.ctl("add_vhost", vhost)
        self.ctl("add_user", user, password)
        self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
