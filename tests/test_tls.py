"""common.tls over real gRPC servers (sync and asyncio) with real certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs.identity import collector, node, operator
from certs.store import CertDir
from common.tls import (
    PeerIdentity,
    TlsError,
    TlsFiles,
    add_port,
    load_tls_settings,
    open_aio_channel,
    open_channel,
    peer_identity,
    plaintext_from_env,
    refusal,
)

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertDir:
    root = tmp_path_factory.mktemp("certs")
    store = CertDir(root)
    store.ensure([node("n1"), node("n2"), collector(), operator()], NOW)
    store.issue(node("old"), NOW - dt.timedelta(days=30), days=2)  # expired four weeks ago
    CertDir(root / "foreign").ensure([node("n2")], NOW)  # same names, another CA
    return store


@dataclass
class Seen:
    peers: list[PeerIdentity | None]


class _Health(health_pb2_grpc.HealthServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def Check(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.seen.peers.append(peer_identity(context))
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def n1_server(certs: CertDir) -> Iterator[tuple[str, Seen]]:
    seen = Seen([])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(_Health(seen), server)
    tls = load_tls_settings(certs.root / "node-n1", expect=node("n1"))
    port = add_port(server, "127.0.0.1:0", tls)
    server.start()
    yield f"127.0.0.1:{port}", seen
    server.stop(0)


def _check(address: str, tls: TlsFiles | None, role: str = "node", name: str = "n1") -> None:
    with open_channel(address, tls, role, name) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_peer_identity_comes_from_the_client_certificate(
    certs: CertDir, n1_server: tuple[str, Seen]
) -> None:
    address, seen = n1_server
    _check(address, TlsFiles.in_dir(certs.root / "node-n2"))
    _check(address, TlsFiles.in_dir(certs.root / "operator-admin"))
    _check(address, TlsFiles.in_dir(certs.root / "collector"))
    assert seen.peers == [node("n2"), operator("admin"), collector()]


@pytest.mark.parametrize(
    "case",
    ["plaintext client", "certificate from another CA", "expired certificate", "wrong server"],
)
def test_refused_before_any_handler_runs(
    certs: CertDir, n1_server: tuple[str, Seen], case: str
) -> None:
    address, seen = n1_server
    root = certs.root
    real_ca = root / "ca" / "ca.crt"
    if case == "plaintext client":
        tls, name = None, "n1"
    elif case == "certificate from another CA":
        # Trusts the real CA (so it accepts n1), presents a certificate the real CA never issued.
        foreign = root / "foreign" / "node-n2"
        tls, name = TlsFiles(real_ca, foreign / "tls.crt", foreign / "tls.key"), "n1"
    elif case == "expired certificate":
        tls, name = TlsFiles.in_dir(root / "node-old"), "n1"
    else:  # a client that meant to reach n2 must not accept n1's certificate
        tls, name = TlsFiles.in_dir(root / "node-n2"), "n2"
    with pytest.raises(grpc.RpcError) as caught:
        _check(address, tls, name=name)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert seen.peers == []  # the handler never ran


def test_asyncio_server_reads_the_same_identity(certs: CertDir) -> None:
    seen: list[PeerIdentity | None] = []

    class AioHealth(health_pb2_grpc.HealthServicer):
        async def Check(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
            seen.append(peer_identity(context))
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def scenario() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(AioHealth(), server)
        port = add_port(server, "127.0.0.1:0", TlsFiles.in_dir(certs.root / "collector"))
        await server.start()
        try:
            tls = TlsFiles.in_dir(certs.root / "node-n2")
            async with open_aio_channel(f"127.0.0.1:{port}", tls, "collector", "collector") as ch:
                await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
        finally:
            await server.stop(0)

    asyncio.run(scenario())
    assert seen == [node("n2")]


def test_plaintext_server_has_no_peer_identity() -> None:
    seen = Seen([])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(_Health(seen), server)
    port = add_port(server, "127.0.0.1:0", None)
    server.start()
    try:
        _check(f"127.0.0.1:{port}", None)
    finally:
        server.stop(0)
    assert seen.peers == [None]


def test_load_tls_settings_refusals(certs: CertDir, tmp_path: Path) -> None:
    root = certs.root
    assert load_tls_settings(root / "node-n1", expect=node("n1")) == TlsFiles.in_dir(
        root / "node-n1"
    )
    with pytest.raises(TlsError, match=r"ca\.crt: missing; create it with `cl-certs ensure"):
        load_tls_settings(tmp_path)
    with pytest.raises(TlsError, match="certificate of node n2, but this process is node n3"):
        load_tls_settings(root / "node-n2", expect=node("n3"))
    with pytest.raises(TlsError, match=r"certificate expired on \d{4}-\d\d-\d\d .* UTC"):
        load_tls_settings(root / "node-old")
    with pytest.raises(TlsError, match="not valid before"):
        load_tls_settings(root / "node-n1", now=NOW - dt.timedelta(days=1))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("ca.crt", "tls.crt"):
        (mixed / name).write_bytes((root / "node-n1" / name).read_bytes())
    (mixed / "tls.key").write_bytes((root / "node-n2" / "tls.key").read_bytes())
    os.chmod(mixed / "tls.key", 0o600)
    with pytest.raises(TlsError, match="does not belong"):
        load_tls_settings(mixed)
    os.chmod(mixed / "tls.key", 0o644)
    with pytest.raises(TlsError, match="readable by others .*chmod 600"):
        load_tls_settings(mixed)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "ca.crt").write_bytes((root / "ca" / "ca.crt").read_bytes())
    for name in ("tls.crt", "tls.key"):
        (foreign / name).write_bytes((root / "foreign" / "node-n2" / name).read_bytes())
    os.chmod(foreign / "tls.key", 0o600)
    with pytest.raises(TlsError, match="not issued by the CA"):
        load_tls_settings(foreign)


def test_load_tls_settings_without_the_certificate_check(certs: CertDir, tmp_path: Path) -> None:
    # check=False (the CLI's fast path): missing files and a readable key are
    # still refused at once; what needs the certificates parsed is not.
    with pytest.raises(TlsError, match=r"ca\.crt: missing"):
        load_tls_settings(tmp_path, check=False)
    expired = certs.root / "node-old"
    assert load_tls_settings(expired, check=False) == TlsFiles.in_dir(expired)
    with pytest.raises(TlsError, match="certificate expired"):
        load_tls_settings(expired)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (garbage / name).write_bytes(b"not a certificate")
    os.chmod(garbage / "tls.key", 0o644)
    with pytest.raises(TlsError, match="readable by others"):
        load_tls_settings(garbage, check=False)
    os.chmod(garbage / "tls.key", 0o600)
    assert load_tls_settings(garbage, check=False) == TlsFiles.in_dir(garbage)
    with pytest.raises(TlsError, match="not a PEM certificate"):
        load_tls_settings(garbage)


def test_plaintext_is_explicit_and_loud(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_tls_settings(None, plaintext=True, expect=node("n7")) is None
    assert "PLAINTEXT gRPC: mutual TLS is OFF" in capsys.readouterr().err
    with pytest.raises(TlsError, match="not --plaintext"):
        load_tls_settings(None)
    assert plaintext_from_env({"CL_PLAINTEXT": "1"}) is True
    assert plaintext_from_env({}) is False
    with pytest.raises(TlsError, match="CL_PLAINTEXT='maybe'"):
        plaintext_from_env({"CL_PLAINTEXT": "maybe"})


def test_refusal_rules() -> None:
    assert refusal(node("n2"), {"node"}, "n2") is None
    assert refusal(None, {"node"})[0] == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[index]
    code, message = refusal(node("n2"), {"node"}, "n3")  # type: ignore[misc]
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message == "node n2 may not speak for node n3"
    code, message = refusal(node("n2"), {"operator"})  # type: ignore[misc]
    assert (code, message) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "node n2 may not make this call (only operator)",
    )
    assert refusal(None, {"operator"}, tls=False) is None
