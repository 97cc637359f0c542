"""The authorizing interceptors over real grpc and grpc.aio servers with real certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
from concurrent import futures

import grpc
import pytest
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from certs.identity import collector, node, operator
from certs.store import CertDir
from common.authz import (
    COLLECTOR_POLICY,
    NODE_POLICY,
    OPERATOR,
    AioAuthorizingInterceptor,
    AuthorizingInterceptor,
    Policy,
)
from common.tls import RefusalLog, TlsFiles, add_port, open_aio_channel, open_channel

# Health restricted to operators: stands in for any control RPC.
POLICY = Policy({"/grpc.health.v1.Health/Check": OPERATOR}, default=OPERATOR)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertDir:
    store = CertDir(tmp_path_factory.mktemp("authz"))
    store.ensure([node("n1"), collector(), operator()], dt.datetime.now(dt.UTC))
    return store


def tls(certs: CertDir, who: object) -> TlsFiles:
    return TlsFiles.in_dir(certs.identity_dir(who))  # type: ignore[arg-type]


def test_sync_interceptor_refuses_before_the_handler(certs: CertDir) -> None:
    refusals = RefusalLog(structlog.get_logger("test"))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[AuthorizingInterceptor(POLICY, refusals)],
    )
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = add_port(server, "127.0.0.1:0", tls(certs, collector()))
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        with open_channel(address, tls(certs, operator()), "collector", "collector") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with open_channel(address, tls(certs, node("n1")), "collector", "collector") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert caught.value.details() == "node n1 may not make this call (only operator)"
            # Watch is not listed: the default (operators only) applies, streaming too.
            with pytest.raises(grpc.RpcError) as caught:
                next(iter(stub.Watch(health_pb2.HealthCheckRequest(), timeout=5)))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        server.stop(0)
    assert refusals._counts == {("node n1", "Check", "PERMISSION_DENIED"): 3,
                                ("node n1", "Watch", "PERMISSION_DENIED"): 1}  # fmt: skip


def test_aio_interceptor_guards_unary_and_streaming_handlers(certs: CertDir) -> None:
    async def scenario() -> list[grpc.StatusCode]:
        refusals = RefusalLog(structlog.get_logger("test"))
        server = grpc.aio.server(interceptors=[AioAuthorizingInterceptor(POLICY, refusals)])
        servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = add_port(server, "127.0.0.1:0", tls(certs, collector()))
        await server.start()
        codes = []
        try:
            address = f"127.0.0.1:{port}"
            for who in (operator(), node("n1")):
                async with open_aio_channel(
                    address, tls(certs, who), "collector", "collector"
                ) as ch:
                    stub = health_pb2_grpc.HealthStub(ch)
                    try:
                        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as error:
                        codes.append(error.code())
                    try:
                        async for _ in stub.Watch(health_pb2.HealthCheckRequest(), timeout=1):
                            break
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as error:
                        codes.append(error.code())
        finally:
            await server.stop(0)
        return codes

    assert asyncio.run(scenario()) == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.PERMISSION_DENIED,
    ]


def test_policies_name_every_rpc_of_the_contract() -> None:
    from protos import chandy_lamport_pb2 as pb

    for service, policy in (("Node", NODE_POLICY), ("Collector", COLLECTOR_POLICY)):
        methods = pb.DESCRIPTOR.services_by_name[service].methods_by_name
        for name in methods:
            assert f"/chandy_lamport.{service}/{name}" in policy, f"{service}.{name} has no rule"


def test_the_guarded_handler_of_a_method_is_built_once() -> None:
    interceptor = AuthorizingInterceptor(POLICY, RefusalLog(structlog.get_logger("test")))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    other = grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    class Details:
        method = "/grpc.health.v1.Health/Check"

    first = interceptor.intercept_service(lambda details: handler, Details())
    assert interceptor.intercept_service(lambda details: handler, Details()) is first
    assert first is not handler and first.unary_unary is not handler.unary_unary
    # Another handler for the method (a server rebuilt its table) gets its own guard.
    assert interceptor.intercept_service(lambda details: other, Details()) is not first
    assert interceptor.intercept_service(lambda details: None, Details()) is None
