"""Who may call which RPC: one policy table per server, enforced by an interceptor.

Every method of a server is listed with the roles (from the caller's
certificate, `common.tls.peer_identity`) that may call it; a method that is
not listed, such as one added to the proto later, is refused to everyone but
operators until someone decides otherwise. Rules that depend on the request
("a report for n3 only from n3", "a Channel for sender n2 only from n2") are
checked by the handlers, which see the request.

The interceptor refuses with UNAUTHENTICATED (no cluster certificate) or
PERMISSION_DENIED (a role that may not call this), logs each kind of refusal
once (`RefusalLog`), and never runs the handler. It exists for both grpc and
grpc.aio servers; a plaintext server (explicit --plaintext) gets none.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from common.tls import RefusalLog, peer_identity, refusal

ANYONE = frozenset({"node", "collector", "operator"})  # any certificate of the cluster CA
OPERATOR = frozenset({"operator"})

HEALTH = {
    "/grpc.health.v1.Health/Check": ANYONE,
    "/grpc.health.v1.Health/Watch": ANYONE,
}

NODE_POLICY: dict[str, frozenset[str]] = {
    **HEALTH,
    "/chandy_lamport.Node/Channel": frozenset({"node"}),  # + sender == certificate (handler)
    "/chandy_lamport.Node/StartSnapshot": OPERATOR,
    "/chandy_lamport.Node/GetStatus": frozenset({"operator", "collector"}),
    # The restore protocol is driven by the collector on an operator's request.
    "/chandy_lamport.Node/PrepareRestore": frozenset({"operator", "collector"}),
    "/chandy_lamport.Node/CommitRestore": frozenset({"operator", "collector"}),
    "/chandy_lamport.Node/AbortRestore": frozenset({"operator", "collector"}),
    "/chandy_lamport.Node/SetWorkload": OPERATOR,
}

COLLECTOR_POLICY: dict[str, frozenset[str]] = {
    **HEALTH,
    "/chandy_lamport.Collector/ReportLocalSnapshot": frozenset({"node"}),  # + own node_id
    "/chandy_lamport.Collector/BeginSnapshot": OPERATOR,
    "/chandy_lamport.Collector/GetSnapshot": OPERATOR,
    "/chandy_lamport.Collector/ListSnapshots": OPERATOR,
    "/chandy_lamport.Collector/WaitSnapshot": OPERATOR,
    # Operators restore any complete snapshot; a node only asks to rejoin: the
    # latest one, and only while it reports itself stale (checked by the handler).
    "/chandy_lamport.Collector/Restore": frozenset({"operator", "node"}),
    "/chandy_lamport.Collector/ListRestores": OPERATOR,
}


@dataclass(frozen=True)
class Policy:
    methods: Mapping[str, frozenset[str]]
    default: frozenset[str] = OPERATOR
    unchecked: frozenset[str] = field(default_factory=frozenset)

    def roles_for(self, method: str) -> frozenset[str]:
        return self.methods.get(method, self.default)


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def _rebuild(handler: grpc.RpcMethodHandler, wrap: Callable[[Any, bool], Any]) -> Any:
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, False),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, True),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
    )
    for attribute, make, _streaming in kinds:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return make(
                wrap(behavior, attribute.endswith("stream")),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class _GuardedHandlers:
    """The guarded handler of each method, built on its first call and reused: the
    server returns the same handler for a method every time, so rebuilding it
    (and its closures) per call is work for nothing. Only registered methods
    get here (an unknown one has no handler), so the cache is bounded."""

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, Any]] = {}

    def guarded(self, method: str, handler: grpc.RpcMethodHandler, build: Callable[[], Any]) -> Any:
        cached = self._guarded.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = build()
        self._guarded[method] = (handler, guarded)
        return guarded


class AuthorizingInterceptor(grpc.ServerInterceptor):
    """For `grpc.server(interceptors=[...])`."""

    def __init__(self, policy: Policy, refusals: RefusalLog) -> None:
        self.policy = policy
        self.refusals = refusals
        self._handlers = _GuardedHandlers()

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        return self._handlers.guarded(method, handler, lambda: self._guard(method, handler))

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        roles = self.policy.roles_for(method)

        def wrap(behavior: Any, streams_out: bool) -> Any:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                peer = peer_identity(context)
                refused = refusal(peer, roles)
                if refused is not None:
                    self.refusals.refused(peer, _short(method), *refused)
                    context.abort(*refused)
                return behavior(request, context)

            return guarded

        return _rebuild(handler, wrap)


class AioAuthorizingInterceptor(grpc.aio.ServerInterceptor):
    """For `grpc.aio.server(interceptors=[...])`."""

    def __init__(self, policy: Policy, refusals: RefusalLog) -> None:
        self.policy = policy
        self.refusals = refusals
        self._handlers = _GuardedHandlers()

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        return self._handlers.guarded(method, handler, lambda: self._guard(method, handler))

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        roles = self.policy.roles_for(method)

        async def check(context: grpc.aio.ServicerContext) -> None:
            peer = peer_identity(context)
            refused = refusal(peer, roles)
            if refused is not None:
                self.refusals.refused(peer, _short(method), *refused)
                await context.abort(*refused)

        def wrap(behavior: Any, streams_out: bool) -> Any:
            if inspect.isasyncgenfunction(behavior):

                async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    await check(context)
                    async for item in behavior(request, context):
                        yield item

                return guarded_stream

            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    return await result
                return result

            return guarded

        return _rebuild(handler, wrap)
