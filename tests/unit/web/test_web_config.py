"""The web config file (exporter-toolkit format) and the basic-auth check.

TLS contexts are exercised with real in-memory handshakes against certificates generated at test
time; bcrypt hashes are real (cost 4, to stay fast).
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import tempfile
import threading
from pathlib import Path

import bcrypt
import pytest

from celery_exporter import cli
from celery_exporter.config import ConfigError
from celery_exporter.web.basic_auth import CHALLENGE, BasicAuth
from celery_exporter.web.web_config import WebConfig, load_web_config
from tests.support.certs import Pki, make_pki, write_encrypted_key


def bcrypt_hash(password: bytes, rounds: int = 4) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=rounds)).decode()


ALICE_HASH = bcrypt_hash(b"wonderland")


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def write(tmp_path: Path) -> WriteConfig:
    return WriteConfig(tmp_path)


class WriteConfig:
    """Writes web-config.yml into a tmp dir and returns its path as text."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, text: str) -> str:
        path = self.directory / "web-config.yml"
        path.write_text(text)
        return str(path)


def tls_yaml(pki: Pki, extra: str = "") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n"
        f"  key_file: {pki.server_key}\n" + extra
    )


def block(path: Path) -> str:
    """A PEM file as an indented YAML block scalar, for the inline keys."""
    return "|\n" + "".join(f"    {line}\n" for line in path.read_text().splitlines())


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """Run a TLS handshake in memory; None on success, else the error's reason."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return f"{name}: {exc.reason}"
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            # TLS 1.3 reports a refused client certificate only once data flows.
            try:
                client_side.write(b"ping")
                server_in.write(client_out.read())
                server_side.read(4)
            except ssl.SSLError as exc:
                return f"server: {exc.reason}"
            return None
    return "handshake did not finish"


def client_context(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


# --- good files ------------------------------------------------------------------------------


def test_no_file_means_plain_http_and_no_auth() -> None:
    config = load_web_config(None)
    assert config.ssl_context is None
    assert dict(config.users) == {}
    assert dict(config.headers) == {}


def test_empty_file_means_plain_http_and_no_auth(write: WriteConfig) -> None:
    config = load_web_config(write(""))
    assert config == WebConfig(ssl_context=None, users={}, headers={})


def test_users_and_headers(write: WriteConfig) -> None:
    y_hash = "$2y$" + bcrypt_hash(b"pw")[4:]  # htpasswd writes $2y$
    config = load_web_config(
        write(
            "basic_auth_users:\n"
            f"  alice: '{ALICE_HASH}'\n"
            f"  jürgen: '{y_hash}'\n"
            "http_server_config:\n"
            "  http2: false\n"
            "  headers:\n"
            "    x-frame-options: DENY\n"
            "    Strict-Transport-Security: max-age=31536000\n"
            "    Content-Security-Policy: ''\n"
        )
    )
    assert config.ssl_context is None
    assert dict(config.users) == {"alice": ALICE_HASH.encode(), "jürgen": y_hash.encode()}
    assert dict(config.headers) == {
        "X-Frame-Options": "DENY",
        "Strict-Transport-Security": "max-age=31536000",
    }
    assert ALICE_HASH not in repr(config)


def test_tls_without_client_ca_serves_any_client(write: WriteConfig, pki: Pki) -> None:
    context = load_web_config(write(tls_yaml(pki))).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert handshake(context, client_context(pki)) is None


def test_tls_with_required_client_cert(write: WriteConfig, pki: Pki) -> None:
    extra = f"  client_ca_file: {pki.ca_cert}\n  client_auth_type: RequireAndVerifyClientCert\n"
    context = load_web_config(write(tls_yaml(pki, extra))).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    good = client_context(pki, (pki.client_cert, pki.client_key))
    assert handshake(context, good) is None
    assert handshake(context, client_context(pki)) == "server: PEER_DID_NOT_RETURN_A_CERTIFICATE"
    stranger = client_context(pki, (pki.stranger_cert, pki.stranger_key))
    assert handshake(context, stranger) == "server: CERTIFICATE_VERIFY_FAILED"


def test_verify_client_cert_if_given(write: WriteConfig, pki: Pki) -> None:
    extra = f"  client_ca_file: {pki.ca_cert}\n  client_auth_type: VerifyClientCertIfGiven\n"
    context = load_web_config(write(tls_yaml(pki, extra))).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert handshake(context, client_context(pki)) is None
    stranger = client_context(pki, (pki.stranger_cert, pki.stranger_key))
    assert handshake(context, stranger) == "server: CERTIFICATE_VERIFY_FAILED"


def test_request_client_cert_lets_everyone_in(write: WriteConfig, pki: Pki) -> None:
    extra = "  client_auth_type: RequestClientCert\n"
    context = load_web_config(write(tls_yaml(pki, extra))).ssl_context
    assert context is not None
    stranger = client_context(pki, (pki.stranger_cert, pki.stranger_key))
    assert handshake(context, stranger) is None


def test_require_any_client_cert_is_enforced_as_verified(
    write: WriteConfig, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    extra = f"  client_ca_file: {pki.ca_cert}\n  client_auth_type: RequireClientCert\n"
    with caplog.at_level(logging.WARNING):
        context = load_web_config(write(tls_yaml(pki, extra))).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert "RequireAnyClientCert is enforced as RequireAndVerifyClientCert" in caplog.text


def test_relative_paths_resolve_against_the_config_file(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = pki.server_cert.parent / "web.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    monkeypatch.chdir(tmp_path)
    assert load_web_config(str(config)).ssl_context is not None


def test_inline_pem(write: WriteConfig, pki: Pki) -> None:
    context = load_web_config(
        write(
            "tls_server_config:\n"
            f"  cert: {block(pki.server_cert)}"
            f"  key: {block(pki.server_key)}"
            f"  client_ca: {block(pki.ca_cert)}"
            "  client_auth_type: RequireAndVerifyClientCert\n"
        )
    ).ssl_context
    assert context is not None
    assert handshake(context, client_context(pki, (pki.client_cert, pki.client_key))) is None


# --- the temporary directory: needed only for inline PEM -------------------------------------


@pytest.fixture
def no_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every temporary directory the process asks for fails, as on a read-only root without a
    /tmp volume. tempfile caches its choice in tempfile.tempdir, so that is what is pointed at
    a directory that does not exist (TMPDIR alone would fall back to a writable /tmp)."""
    missing = tmp_path / "no-such-dir"
    monkeypatch.setenv("TMPDIR", str(missing))
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    with pytest.raises(FileNotFoundError):  # the fixture really takes the temp dir away
        tempfile.TemporaryDirectory()


@pytest.mark.usefixtures("no_temp_dir")
def test_cert_and_key_files_load_without_a_temporary_directory(
    write: WriteConfig, pki: Pki
) -> None:
    extra = f"  client_ca_file: {pki.ca_cert}\n  client_auth_type: RequireAndVerifyClientCert\n"
    context = load_web_config(write(tls_yaml(pki, extra))).ssl_context
    assert context is not None
    assert handshake(context, client_context(pki, (pki.client_cert, pki.client_key))) is None


@pytest.mark.usefixtures("no_temp_dir")
def test_file_faults_are_still_named_without_a_temporary_directory(
    write: WriteConfig, tmp_path: Path, pki: Pki
) -> None:
    for case in ("key does not match", "key is encrypted"):
        text, problem = _tls_case(pki, tmp_path, case)
        assert_one_line_error(write(text), problem)


def test_inline_pem_leaves_nothing_in_the_temporary_directory(
    write: WriteConfig, tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    text = f"tls_server_config:\n  cert: {block(pki.server_cert)}  key: {block(pki.server_key)}"
    context = load_web_config(write(text)).ssl_context
    assert context is not None
    assert handshake(context, client_context(pki)) is None
    assert list(scratch.iterdir()) == []  # the private key's copy is gone


def test_inline_key_with_a_cert_file(write: WriteConfig, pki: Pki) -> None:
    text = f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key: {block(pki.server_key)}"
    context = load_web_config(write(text)).ssl_context
    assert context is not None
    assert handshake(context, client_context(pki)) is None


@pytest.mark.usefixtures("no_temp_dir")
@pytest.mark.parametrize(
    ("inline", "problem"),
    [
        (
            "both",
            "inline tls_server_config.cert and tls_server_config.key need a writable "
            "temporary directory (No such file or directory",
        ),
        (
            "key",
            "inline tls_server_config.key needs a writable temporary directory "
            "(No such file or directory",
        ),
    ],
    ids=["cert and key inline", "key inline"],
)
def test_inline_pem_without_a_temporary_directory_is_one_line_and_exit_2(
    write: WriteConfig,
    pki: Pki,
    inline: str,
    problem: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the CLI, as the exporter starts: one line on stderr, exit 2, no traceback."""
    if inline == "both":
        cert = f"  cert: {block(pki.server_cert)}"
    else:
        cert = f"  cert_file: {pki.server_cert}\n"
    path = write(f"tls_server_config:\n{cert}  key: {block(pki.server_key)}")
    monkeypatch.setattr("celery_exporter.logs.setup_logging", lambda *_: None)  # keep pytest's
    for name in [n for n in os.environ if n.startswith("CE_")]:
        monkeypatch.delenv(name)
    argv = ["--broker-url", "redis://127.0.0.1:1/0", "--web-config-file", path]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"celery-exporter: error: --web-config-file {path}: {problem}"), err
    assert "set TMPDIR, or use cert_file and key_file" in err
    assert "Traceback" not in err


def test_tls_versions_and_ciphers(write: WriteConfig, pki: Pki) -> None:
    extra = (
        "  min_version: TLS12\n  max_version: TLS12\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n"
    )
    context = load_web_config(write(tls_yaml(pki, extra))).ssl_context
    assert context is not None
    assert context.maximum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES256-GCM-SHA384"]
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert handshake(context, client_context(pki)) is None


def test_tls13_only_refuses_a_tls12_client(write: WriteConfig, pki: Pki) -> None:
    context = load_web_config(write(tls_yaml(pki, "  min_version: TLS13\n"))).ssl_context
    assert context is not None
    old = client_context(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(context, old) is not None


# --- bad files: one line naming the file and the problem ------------------------------------

BAD_FILES = [
    ("tls_server_config: [", "not valid YAML: expected the node content"),
    ("- a\n- b\n", "the file must be a mapping, not list"),
    ("basic_auth_user: {}\n", "unknown key 'basic_auth_user'"),
    ("tls_server_config: {cert_fil: x}\n", "unknown key 'tls_server_config.cert_fil'"),
    ("http_server_config: {http3: true}\n", "unknown key 'http_server_config.http3'"),
    ("rate_limit: {interval: 1s, burst: 5}\n", "rate_limit is not supported"),
    ("tls_server_config: {client_allowed_sans: [a]}\n", "client_allowed_sans is not supported"),
    ("tls_server_config: {min_version: TLS12}\n", "tls_server_config needs cert_file and key_file"),
    ("tls_server_config: {cert_file: 7}\n", "tls_server_config.cert_file must be a string"),
    ("basic_auth_users: {alice: hunter2}\n", "basic_auth_users.alice: not a bcrypt hash"),
    ("basic_auth_users: {alice: null}\n", "basic_auth_users.alice: not a bcrypt hash"),
    ("basic_auth_users: {alice: '$2b$03$" + "." * 53 + "'}\n", "alice: not a bcrypt hash"),
    ("basic_auth_users: {alice: '$2b$10$" + "A" * 53 + "'}\n", "alice: not a bcrypt hash"),
    ("basic_auth_users: {alice: '$2x$10$" + "." * 53 + "'}\n", "alice: not a bcrypt hash"),
    (f"basic_auth_users: {{'a:b': '{ALICE_HASH}'}}\n", "user 'a:b' contains ':'"),
    (f"basic_auth_users: {{yes: '{ALICE_HASH}'}}\n", "key True is not a string (quote it)"),
    ("basic_auth_users: [alice]\n", "basic_auth_users must be a mapping, not list"),
    ("http_server_config: {headers: {Server: x}}\n", "header 'Server' is not allowed"),
    (
        "http_server_config: {headers: {X-Frame-Options: allow}}\n",
        "headers.X-Frame-Options 'allow': want deny or sameorigin",
    ),
    (
        'http_server_config: {headers: {X-XSS-Protection: "1\\r\\nSet-Cookie: a=b"}}\n',
        "headers.X-XSS-Protection: want printable ASCII text",
    ),
    ("http_server_config: {http2: maybe}\n", "http_server_config.http2 must be true or false"),
]


def assert_one_line_error(path: str, problem: str) -> None:
    """Loading `path` fails with one line that names the file and the problem."""
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(f"--web-config-file {path}: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "problem"), BAD_FILES)
def test_bad_file(write: WriteConfig, text: str, problem: str) -> None:
    path = write(text)
    assert_one_line_error(path, problem)


def _tls_case(pki: Pki, tmp: Path, case: str) -> tuple[str, str]:
    """(extra YAML under tls_server_config or a whole file, expected problem) for a TLS fault."""
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    ca = f"  client_ca_file: {pki.ca_cert}\n"
    cases = {
        "missing cert": (
            f"tls_server_config:\n  cert_file: {tmp}/nope.crt\n  key_file: {pki.server_key}\n",
            f"cannot read cert_file {tmp}/nope.crt: No such file or directory",
        ),
        "cert is a directory": (
            f"tls_server_config:\n  cert_file: {tmp}\n  key_file: {pki.server_key}\n",
            f"cannot read cert_file {tmp}: Is a directory",
        ),
        "cert is garbage": (
            f"tls_server_config:\n  cert_file: {garbage}\n  key_file: {pki.server_key}\n",
            f"cert_file {garbage} holds no PEM certificate",
        ),
        "key is a certificate": (
            f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.ca_cert}\n",
            f"key_file {pki.ca_cert} holds no PEM private key",
        ),
        "key does not match": (
            f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.client_key}\n",
            f"cert_file {pki.server_cert} does not match key_file {pki.client_key}",
        ),
        "key is encrypted": (
            "tls_server_config:\n"
            f"  cert_file: {pki.server_cert}\n"
            f"  key_file: {write_encrypted_key(tmp, b'pw')}\n",
            f"key_file {tmp / 'encrypted.key'} is encrypted",
        ),
        "inline cert not ASCII": (
            "tls_server_config:\n  cert: 'certificat\u00e9'\n  key: x\n",
            "tls_server_config.cert is not PEM text",
        ),
        "cert inline and file": (
            tls_yaml(pki, "  cert: x\n"),
            "give cert or cert_file, not both",
        ),
        "CA is garbage": (
            tls_yaml(
                pki, f"  client_ca_file: {garbage}\n  client_auth_type: VerifyClientCertIfGiven\n"
            ),
            f"client_ca_file {garbage} holds no PEM certificate",
        ),
        "CA without auth type": (
            tls_yaml(pki, ca),
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        "verify without CA": (
            tls_yaml(pki, "  client_auth_type: RequireAndVerifyClientCert\n"),
            "client_auth_type RequireAndVerifyClientCert needs client_ca_file",
        ),
        "any cert without CA": (
            tls_yaml(pki, "  client_auth_type: RequireAnyClientCert\n"),
            "client_auth_type RequireAnyClientCert needs client_ca_file",
        ),
        "unknown auth type": (
            tls_yaml(pki, ca + "  client_auth_type: RequireCert\n"),
            "client_auth_type 'RequireCert': want one of NoClientCert, RequestClientCert, ",
        ),
        "old TLS": (
            tls_yaml(pki, "  min_version: TLS10\n"),
            "tls_server_config.min_version 'TLS10': want TLS12 or TLS13",
        ),
        "min above max": (
            tls_yaml(pki, "  min_version: TLS13\n  max_version: TLS12\n"),
            "min_version is above max_version",
        ),
        "insecure cipher": (
            tls_yaml(pki, "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
            "unknown or insecure suite 'TLS_RSA_WITH_RC4_128_SHA'",
        ),
        "ciphers not a list": (
            tls_yaml(pki, "  cipher_suites: TLS_AES_128_GCM_SHA256\n"),
            "cipher_suites must be a list of names",
        ),
        "prefer not a bool": (
            tls_yaml(pki, "  prefer_server_cipher_suites: 'no'\n"),
            "prefer_server_cipher_suites must be true or false",
        ),
    }
    return cases[case]


TLS_CASES = [
    "missing cert",
    "cert is a directory",
    "cert is garbage",
    "key is a certificate",
    "key does not match",
    "key is encrypted",
    "inline cert not ASCII",
    "cert inline and file",
    "CA is garbage",
    "CA without auth type",
    "verify without CA",
    "any cert without CA",
    "unknown auth type",
    "old TLS",
    "min above max",
    "insecure cipher",
    "ciphers not a list",
    "prefer not a bool",
]


@pytest.mark.parametrize("case", TLS_CASES)
def test_bad_tls(write: WriteConfig, tmp_path: Path, pki: Pki, case: str) -> None:
    text, problem = _tls_case(pki, tmp_path, case)
    path = write(text)
    assert_one_line_error(path, problem)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yml")
    with pytest.raises(ConfigError, match=r"absent\.yml: cannot read: No such file or directory$"):
        load_web_config(path)


def test_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": cannot read: Is a directory$"):
        load_web_config(str(tmp_path))


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"basic_auth_users: {j\xfcrgen: x}\n")
    with pytest.raises(ConfigError, match=r"latin1\.yml: not UTF-8 text$"):
        load_web_config(str(path))


# --- basic auth ------------------------------------------------------------------------------


class CountingVerify:
    """bcrypt.checkpw that records which hashes it was asked about."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self.lock:
            self.hashes.append(hashed)
        return bcrypt.checkpw(password, hashed)


USERS = {"alice": ALICE_HASH.encode(), "jürgen": bcrypt_hash("straße".encode()).encode()}


def test_auth_disabled_without_users() -> None:
    auth = BasicAuth({})
    assert not auth.enabled
    assert auth.check(None)
    assert auth.check("Basic garbage")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic(b"alice:wonderland"), True),
        ("basic " + base64.b64encode(b"alice:wonderland").decode(), True),
        (basic("jürgen:straße".encode()), True),
        (basic(b"alice:Wonderland"), False),
        (basic(b"alice:"), False),
        (basic(b"bob:wonderland"), False),
        (basic(b"alice"), False),
        (basic(b"alice:" + b"x" * 100), False),  # bcrypt refuses > 72 bytes
        (basic("jürgen:straße".encode("latin-1")), False),
        (None, False),
        ("", False),
        ("Bearer abc", False),
        ("Basic", False),
        ("Basic !!notbase64", False),
        ("Basic Ym9i\u00e9", False),
        ("Basic " + base64.b64encode(b"alice:wonderland").decode().rstrip("="), False),
    ],
)
def test_check(header: str | None, expected: bool) -> None:
    assert BasicAuth(USERS).check(header) is expected


def test_good_credentials_are_verified_once() -> None:
    verify = CountingVerify()
    auth = BasicAuth(USERS, verify=verify)
    assert auth.check(basic(b"alice:wonderland"))
    assert auth.check(basic(b"alice:wonderland"))
    assert verify.hashes == [ALICE_HASH.encode()]


def test_wrong_passwords_are_never_cached() -> None:
    verify = CountingVerify()
    auth = BasicAuth(USERS, verify=verify)
    for _ in range(3):
        assert not auth.check(basic(b"alice:guess"))
    assert len(verify.hashes) == 3


def test_unknown_user_takes_the_same_bcrypt_path() -> None:
    verify = CountingVerify()
    auth = BasicAuth({"alice": ALICE_HASH.encode()}, verify=verify)
    # even the right password for a known user's hash must not let an unknown name in
    assert not auth.check(basic(b"mallory:wonderland"))
    assert not auth.check(basic(b"mallory:wonderland"))
    assert verify.hashes == [ALICE_HASH.encode()] * 2


def test_unknown_user_dummy_has_the_common_cost() -> None:
    verify = CountingVerify()
    users = {"a": bcrypt_hash(b"a", 5).encode(), "b": bcrypt_hash(b"b", 4).encode()}
    users["c"] = bcrypt_hash(b"c", 4).encode()
    BasicAuth(users, verify=verify).check(basic(b"nobody:x"))
    assert [h[:7] for h in verify.hashes] == [b"$2b$04$"]


def test_cache_is_bounded_and_keyed_without_plaintext() -> None:
    verify = CountingVerify()
    users = {f"u{i}": bcrypt_hash(f"p{i}".encode()).encode() for i in range(3)}
    auth = BasicAuth(users, verify=verify, cache_size=2)
    for i in range(3):
        assert auth.check(basic(f"u{i}:p{i}".encode()))
    assert len(auth._cache) == 2
    assert all(b"p1" not in key and b"u1" not in key for key in auth._cache)
    assert auth.check(basic(b"u2:p2"))  # recent: cached
    assert len(verify.hashes) == 3
    assert auth.check(basic(b"u0:p0"))  # evicted: verified again
    assert len(verify.hashes) == 4


def test_check_from_many_threads() -> None:
    verify = CountingVerify()
    auth = BasicAuth(USERS, verify=verify)
    results: dict[int, bool] = {}

    def scrape(i: int) -> None:
        header = basic(b"alice:wonderland") if i % 2 else basic(b"alice:nope")
        results[i] = auth.check(header)

    threads = [threading.Thread(target=scrape, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: bool(i % 2) for i in range(16)}
    assert auth.check(basic(b"alice:wonderland"))
    # every wrong try pays bcrypt; the good ones at most once per thread that raced the cache
    assert 9 <= len(verify.hashes) <= 16


def test_challenge_names_the_realm() -> None:
    assert CHALLENGE.startswith('Basic realm="')
