"""TLS and bearer tokens: a server with --tls-cert/--tls-key and --auth-tokens."""

from __future__ import annotations

import datetime as dt
import ipaddress
import pathlib
import subprocess

import pytest
from conftest import recur_bin, unique
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from recur_client import (
    Client,
    PermissionDeniedError,
    Scope,
    TaskEventType,
    UnauthenticatedError,
    UnavailableError,
)


def self_signed(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recur-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def new_token(name: str, scopes: str, namespace: str | None = None) -> tuple[str, str]:
    """`recur token new`: the token and its access-file entry."""
    cmd = [str(recur_bin()), "token", "new", "--name", name, "--scopes", scopes]
    if namespace:
        cmd += ["--namespace", namespace]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    token = lines[0].strip()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("- name:"))
    return token, "\n".join(lines[start:]) + "\n"


@pytest.fixture
def secure_server(start_server: object, tmp_path: pathlib.Path) -> dict[str, object]:
    cert, key = self_signed(tmp_path)
    reader, reader_entry = new_token("reader", "read")
    writer, writer_entry = new_token("writer", "read,write", "team-a.")
    access = tmp_path / "access.yaml"
    access.write_text("tokens:\n" + reader_entry + writer_entry)
    server = start_server(  # type: ignore[operator]
        ["--tls-cert", str(cert), "--tls-key", str(key), "--auth-tokens", str(access)]
    )
    return {"server": server, "ca": cert, "reader": reader, "writer": writer}


def test_tokens_scopes_and_namespaces(secure_server: dict[str, object], http_target: str) -> None:
    server, ca = secure_server["server"], secure_server["ca"]
    address = server.address  # type: ignore[attr-defined]

    with Client(address, ca=ca) as anonymous:  # type: ignore[arg-type]
        with pytest.raises(UnauthenticatedError):
            anonymous.who_am_i()

    with Client(address, ca=ca, token=str(secure_server["writer"])) as writer:  # type: ignore[arg-type]
        me = writer.who_am_i()
        assert me.name == "writer"
        assert set(me.scopes) == {Scope.SCOPE_READ, Scope.SCOPE_WRITE}
        assert me.namespace == "team-a."
        tid = unique("team-a.task")
        assert writer.register(tid, every=60, http_url=http_target).task_id == tid
        with pytest.raises(PermissionDeniedError):
            writer.register(unique("team-b.task"), every=60, http_url=http_target)
        generated = writer.register(every=60, http_url=http_target, request_id=unique("req"))
        assert generated.task_id.startswith("team-a.")

    # PEM bytes work as well as a path; a reader may read, not write.
    pem = pathlib.Path(ca).read_bytes()  # type: ignore[arg-type]
    with Client(address, ca=pem, token=str(secure_server["reader"])) as reader:
        assert reader.who_am_i().name == "reader"
        assert reader.get(tid).task_id == tid
        assert tid in [t.task_id for t in reader.list()]
        assert list(reader.results(tid, history_only=True)) == []  # streams carry the token
        with reader.watch_tasks() as events:
            assert next(events).type in (TaskEventType.TASK_EVENT_TYPE_EXISTING,)
        with pytest.raises(PermissionDeniedError) as info:
            reader.pause(tid)
        assert "write" in info.value.message

    # Plaintext against the TLS port fails; so does TLS without trusting the CA.
    with Client(address, token=str(secure_server["reader"]), timeout=3) as plain:
        with pytest.raises(UnavailableError):
            plain.who_am_i()
    with Client(address, tls=True, token=str(secure_server["reader"]), timeout=3) as untrusted:
        with pytest.raises(UnavailableError):
            untrusted.who_am_i()


def test_plaintext_token_refused_beyond_loopback() -> None:
    with pytest.raises(ValueError):
        Client("recur.example.com:50051", token="recur_x")
    Client("recur.example.com:50051", token="recur_x", allow_plaintext_token=True).close()
    Client("localhost:50051", token="recur_x").close()
    Client("[::1]:50051", token="recur_x").close()
