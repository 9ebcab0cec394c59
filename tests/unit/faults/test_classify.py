"""FaultDescriber on real errors: TLS failures from real handshakes with test certificates,
refused connections from a real closed port, and the client libraries' own exception types
with the texts the brokers send, wrapped the way redis-py and kombu wrap them. One fault is
one kind however it is wrapped; the words name the flag to fix; no password gets through."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import amqp.exceptions
import kombu.exceptions
import pytest
import redis.exceptions

from celery_exporter.faults.classify import (
    AUTH,
    PERMISSION,
    TLS,
    UNREACHABLE,
    VHOST,
    Fault,
    FaultDescriber,
)
from celery_exporter.faults.outages import fault_line
from celery_exporter.faults.refusals import Refused
from tests.support.certs import Pki, make_pki
from tests.support.servers import free_port

REDIS_URL = "rediss://:s3cret-pw@127.0.0.1:6380/0"
AMQP_URL = "amqps://ce-user:s3cret-pw@127.0.0.1:5671/ce-vhost"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("other-pki")).ca_cert


def handshake_error(
    server: Callable[[socket.socket], None], client: ssl.SSLContext, hostname: str
) -> BaseException:
    """The error a TLS client gets talking to `server` over a socket pair."""
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    thread = threading.Thread(target=server, args=(theirs,), daemon=True)
    thread.start()
    try:
        with client.wrap_socket(ours, server_hostname=hostname) as tls:
            tls.recv(16)  # TLS 1.3: a rejected client certificate shows only on the first read
    except (ssl.SSLError, OSError) as exc:
        return exc
    finally:
        thread.join(10)
        theirs.close()
    raise AssertionError("the handshake succeeded")


def tls_server(pki: Pki, require_client_cert: bool = False) -> Callable[[socket.socket], None]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.load_verify_locations(pki.ca_cert)
        context.verify_mode = ssl.CERT_REQUIRED

    def serve(sock: socket.socket) -> None:
        try:
            with context.wrap_socket(sock, server_side=True) as tls:
                tls.recv(16)
        except (ssl.SSLError, OSError):
            pass  # the client gave up, or we refused it: the client's error is the point

    return serve


def plain_server(sock: socket.socket) -> None:
    """A broker port without TLS: it answers the ClientHello with plain text."""
    sock.recv(4096)
    sock.sendall(b"-ERR unknown command\r\n")
    sock.close()


def client(
    ca: Path | None, certfile: Path | None = None, keyfile: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


def like_redis_and_kombu(exc: BaseException) -> BaseException:
    """`exc` as the event thread sees it: redis-py's ConnectionError raised while handling it,
    then kombu's OperationalError raised from that."""
    try:
        try:
            raise exc
        except BaseException as inner:
            # no `from`: redis-py raises it while handling, which sets only __context__
            raise redis.exceptions.ConnectionError(  # noqa: B904
                f"Error 1 connecting to 127.0.0.1:6380. {inner}."
            )
    except redis.exceptions.ConnectionError as middle:
        try:
            raise kombu.exceptions.OperationalError(str(middle)) from middle
        except kombu.exceptions.OperationalError as outer:
            return outer
    raise AssertionError("unreachable")


def test_a_wrong_ca_names_the_ca_option_however_it_is_wrapped(pki: Pki, stranger_ca: Path) -> None:
    error = handshake_error(tls_server(pki), client(stranger_ca), "127.0.0.1")
    describe = FaultDescriber(REDIS_URL, {"ssl_cert_reqs": 2, "ssl_ca_certs": str(stranger_ca)})
    bare, wrapped = describe(error), describe(like_redis_and_kombu(error))
    assert bare == wrapped
    assert bare.kind == TLS
    assert bare.description.startswith(
        "TLS certificate verify failed: the broker's certificate is not signed by the CA in "
        f"--broker-ssl-option ssl_ca_certs={stranger_ca} ("
    )
    assert "_ssl.c" not in bare.description
    # py-amqp spells the option ca_certs, and so does the advice
    amqp_describe = FaultDescriber(AMQP_URL, {"ca_certs": str(stranger_ca)})
    assert f"--broker-ssl-option ca_certs={stranger_ca}" in amqp_describe(error).description


def test_no_ca_given_says_how_to_give_one(pki: Pki) -> None:
    error = handshake_error(tls_server(pki), client(None), "127.0.0.1")
    description = FaultDescriber(REDIS_URL)(error).description
    assert "a CA this machine trusts (name it with --broker-ssl-option ssl_ca_certs=PATH)" in (
        description
    )


def test_a_certificate_for_another_host_is_a_hostname_mismatch(pki: Pki) -> None:
    error = handshake_error(tls_server(pki), client(pki.ca_cert), "broker.example.com")
    fault = FaultDescriber(REDIS_URL, {"ssl_ca_certs": str(pki.ca_cert)})(error)
    assert fault.kind == TLS
    assert fault.description.startswith(
        "TLS hostname mismatch: the broker's certificate is not valid for the host in "
        "--broker-url ("
    )
    assert "broker.example.com" in fault.description


def test_a_missing_or_rejected_client_certificate_is_named(pki: Pki) -> None:
    options = {"ssl_ca_certs": str(pki.ca_cert)}
    missing = handshake_error(tls_server(pki, True), client(pki.ca_cert), "127.0.0.1")
    fault = FaultDescriber(REDIS_URL, options)(like_redis_and_kombu(missing))
    assert fault.kind == TLS
    assert "client certificate" in fault.description
    assert "--broker-ssl-option ssl_certfile" in fault.description

    stranger = client(pki.ca_cert, pki.stranger_cert, pki.stranger_key)
    rejected = handshake_error(tls_server(pki, True), stranger, "127.0.0.1")
    given = {**options, "ssl_certfile": str(pki.stranger_cert)}
    fault = FaultDescriber(REDIS_URL, given)(rejected)
    assert fault.kind == TLS
    # TLS 1.3 sends the server's verdict after the handshake: the client may read it as an
    # alert or, when the server has hung up first, as an EOF. Both name the certificate.
    assert "client certificate" in fault.description
    assert f"--broker-ssl-option ssl_certfile={pki.stranger_cert}" in fault.description


def test_tls_to_a_plain_port_asks_whether_it_speaks_tls(pki: Pki) -> None:
    error = handshake_error(plain_server, client(pki.ca_cert), "127.0.0.1")
    fault = FaultDescriber(REDIS_URL, {"ssl_ca_certs": str(pki.ca_cert)})(error)
    assert fault.kind == TLS
    assert fault.description.startswith("TLS handshake failed (")
    assert fault.description.endswith("does the broker speak TLS on that port?")


def test_a_refused_connection_and_an_unknown_host_are_one_kind() -> None:
    describe = FaultDescriber("redis://:s3cret-pw@127.0.0.1:6379/0")
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError) as refused:
        sock.connect(("127.0.0.1", free_port()))
    with pytest.raises(socket.gaierror) as unknown:
        socket.getaddrinfo("no-such-broker.invalid", 6379)
    assert describe(refused.value) == describe(like_redis_and_kombu(refused.value))
    assert describe(refused.value).kind == describe(unknown.value).kind == UNREACHABLE
    assert describe(refused.value).description.startswith("connection refused")
    assert describe(unknown.value).description == (
        "unknown host: the host name in --broker-url does not resolve"
    )


def test_a_plain_connection_reset_may_mean_a_tls_port() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    fault = FaultDescriber("redis://:pw@127.0.0.1:6380/0")(like_redis_and_kombu(reset))
    assert fault.kind == UNREACHABLE
    assert fault.description == "the broker reset the connection"
    assert "use rediss:// or amqps://" in fault.setup_hint


@pytest.mark.parametrize(
    ("url", "error", "kind", "words"),
    [
        (
            REDIS_URL,
            redis.exceptions.AuthenticationError(
                "invalid username-password pair or user is disabled."
            ),
            AUTH,
            "authentication failed: the broker refused the user and password in --broker-url",
        ),
        (
            "redis://127.0.0.1:6379/0",
            redis.exceptions.AuthenticationError("Authentication required."),
            AUTH,
            "authentication failed: the broker wants a password and --broker-url has none",
        ),
        (
            AMQP_URL,
            amqp.exceptions.AccessRefused(
                reply_text="ACCESS_REFUSED - Login was refused using authentication mechanism "
                "PLAIN. For details see the broker logfile.",
                method_sig=(0, 0),
                reply_code=403,
            ),
            AUTH,
            "authentication failed: the broker refused the user and password in --broker-url",
        ),
        (
            AMQP_URL,
            amqp.exceptions.NotAllowed(
                "NOT_ALLOWED - vhost nope not found", (10, 40), reply_code=530
            ),
            VHOST,
            "RabbitMQ has no vhost 'nope': check the path at the end of --broker-url",
        ),
        (
            AMQP_URL,
            amqp.exceptions.NotAllowed(
                "NOT_ALLOWED - access to vhost 'ce-vhost' refused for user 'ce-user'",
                (10, 40),
                reply_code=530,
            ),
            VHOST,
            "RabbitMQ user 'ce-user' may not use vhost 'ce-vhost' (rabbitmqctl set_permissions",
        ),
        (
            AMQP_URL,
            amqp.exceptions.AccessRefused(
                reply_text="ACCESS_REFUSED - access to queue 'celery' in vhost 'ce-vhost' "
                "refused for user 'ce-user'",
                method_sig=(50, 10),
                reply_code=403,
            ),
            PERMISSION,
            "RabbitMQ user 'ce-user' may not use queue 'celery' in vhost 'ce-vhost' "
            "(Queue.declare: 403 ACCESS_REFUSED): let its configure pattern match it "
            "(rabbitmqctl set_permissions -p ce-vhost ce-user CONFIGURE WRITE READ)",
        ),
        (
            REDIS_URL,
            redis.exceptions.NoPermissionError(
                "this user has no permissions to run the 'llen' command"
            ),
            PERMISSION,
            "Redis user 'default' was refused an operation (NoPermissionError: this user has "
            "no permissions to run the 'llen' command): grant it with ACL SETUSER default +llen",
        ),
    ],
    ids=["redis-password", "redis-no-password", "amqp-login", "vhost", "vhost-access",
         "amqp-queue", "redis-acl"],
)  # fmt: skip
def test_credentials_vhosts_and_permissions(
    url: str, error: BaseException, kind: str, words: str
) -> None:
    describe = FaultDescriber(url)
    fault = describe(error)
    assert fault.kind == kind
    assert words in fault.description
    try:
        raise kombu.exceptions.OperationalError(str(error)) from error
    except kombu.exceptions.OperationalError as wrapped:
        assert describe(wrapped) == fault


def test_an_unknown_error_is_one_kind_per_text_and_never_shows_the_password() -> None:
    describe = FaultDescriber("redis://:p%40ss-w0rd@127.0.0.1:6379/0")
    error = redis.exceptions.ResponseError("ERR invalid DB index p@ss-w0rd p%40ss-w0rd")
    fault = describe(error)
    assert fault.description == "ResponseError: ERR invalid DB index *** ***"
    try:
        raise kombu.exceptions.OperationalError(str(error)) from error
    except kombu.exceptions.OperationalError as wrapped:
        assert describe(wrapped).kind == fault.kind


def refused_queue(
    queue: str, user: str = "monitor", vhost: str = "/", perm: str = ""
) -> amqp.exceptions.AccessRefused:
    """What py-amqp raises when RabbitMQ closes the channel on a passive declare with 403."""
    return amqp.exceptions.AccessRefused(
        reply_text=f"ACCESS_REFUSED - {perm}access to queue '{queue}' in vhost '{vhost}' "
        f"refused for user '{user}'",
        method_sig=(50, 10),
        reply_code=403,
    )


def test_a_rabbitmq_refusal_names_user_queue_vhost_and_the_permission_to_grant() -> None:
    describe = FaultDescriber("amqp://monitor:s3cret-pw@rabbit:5672//")
    fault = describe(refused_queue("jobs"))
    assert fault.kind == PERMISSION
    assert fault.description == (
        "RabbitMQ user 'monitor' may not use queue 'jobs' in vhost '/' (Queue.declare: 403 "
        "ACCESS_REFUSED): let its configure pattern match it "
        "(rabbitmqctl set_permissions -p / monitor CONFIGURE WRITE READ)"
    )
    # A broker that names the permission itself is taken at its word.
    named = describe(refused_queue("jobs", perm="read "))
    assert "let its read pattern match it" in named.description
    # A consumer is refused read, and a vhost with a space is quoted for the shell.
    consume = amqp.exceptions.AccessRefused(
        reply_text="ACCESS_REFUSED - access to queue 'q' in vhost 'my vhost' refused for "
        "user 'monitor'",
        method_sig=(60, 20),
        reply_code=403,
    )
    words = describe(consume).description
    assert "(Basic.consume: 403 ACCESS_REFUSED): let its read pattern match it" in words
    assert "rabbitmqctl set_permissions -p 'my vhost' monitor CONFIGURE WRITE READ" in words


def test_a_redis_refusal_from_our_probe_names_the_user_and_the_acl_rules() -> None:
    describe = FaultDescriber("redis://monitor:s3cret-pw@127.0.0.1:6379/0")
    broker = redis.exceptions.NoPermissionError(
        "this user has no permissions to access one of the keys used as arguments"
    )
    try:
        raise Refused("queue 'jobs', the unacked hash", ["+llen", "~jobs*", "~unacked"]) from broker
    except Refused as exc:
        fault = describe(exc)
    assert fault.kind == PERMISSION
    assert fault.description == (
        "Redis user 'monitor' may not read queue 'jobs', the unacked hash (NoPermissionError: "
        "this user has no permissions to access one of the keys used as arguments): grant it "
        "with ACL SETUSER monitor +llen ~jobs* ~unacked"
    )
    assert "s3cret-pw" not in fault.description
    # Without our own words (e.g. the event stream refused a channel): the server's ACL LOG.
    channels = redis.exceptions.NoPermissionError(
        "this user has no permissions to access one of the channels used as arguments"
    )
    assert describe(channels).description.endswith(": ACL LOG on the server names what was refused")


def test_refusals_of_different_things_are_different_problems_but_ids_do_not_count() -> None:
    describe = FaultDescriber("amqp://monitor:pw@rabbit:5672//")
    first = describe(refused_queue("celeryev.0b1e5a32-3f7e-4c35-9d37-52a3a8d8f2c1"))
    again = describe(refused_queue("celeryev.77c0b1f4-1d2a-4e6e-8a5b-0c9d1e2f3a4b"))
    other = describe(refused_queue("jobs"))
    assert first.description != again.description  # the line names the real queue
    assert first.key == again.key  # a reconnect's new event queue is the same problem
    assert other.key != first.key
    # Connection problems stay one problem per kind, whatever the words.
    assert Fault(UNREACHABLE, "connection refused").key == Fault(UNREACHABLE, "reset").key


def test_fault_line_is_the_line_for_every_reader() -> None:
    refused = Fault(PERMISSION, "Redis user 'm' may not read queue 'q'")
    assert fault_line(refused, "queue poll", "redis://m:***@h:6379/0") == (
        "queue poll failing on broker redis://m:***@h:6379/0: Redis user 'm' may not read queue 'q'"
    )
    down = Fault(UNREACHABLE, "connection refused: no broker listens", "is it up?")
    assert fault_line(down, "events", "redis://h") == (
        "cannot connect to broker redis://h: connection refused: no broker listens (is it up?)"
    )
    assert fault_line(down, "events", "redis://h", lost=True) == (
        "lost connection to broker redis://h: connection refused: no broker listens"
    )
