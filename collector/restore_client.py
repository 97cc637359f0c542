"""The restore coordinator's transport: `ParticipantClient` over gRPC (Node.*Restore).

One channel per node, made through the collector's channel factory (mutual
TLS with the collector's certificate, the node's name checked). A call that
cannot reach the node raises `Unreachable`; a node that answers and refuses
(FAILED_PRECONDITION with its reason) raises `Refused`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import grpc

from collector.restorer import Refused, Unreachable
from node.restore import RestoreTarget
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

CALL_TIMEOUT = 5.0

ChannelFactory = Callable[[str, str], grpc.Channel]  # (node id, address) -> channel


def target_to_pb(target: RestoreTarget) -> pb.RestoreTarget:
    return pb.RestoreTarget(
        restore=target.restore,
        epoch=target.epoch,
        snapshot_id=target.snapshot_id,
        balance=target.balance,
        resend=[
            pb.ResendChannel(peer=peer, amounts=list(amounts))
            for peer, amounts in sorted(target.resend.items())
        ],
    )


class GrpcParticipants:
    def __init__(self, addresses: Mapping[str, str], dial: ChannelFactory) -> None:
        self.addresses = dict(addresses)
        self.dial = dial
        self._stubs: dict[str, pb_grpc.NodeStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()

    def _stub(self, node_id: str) -> pb_grpc.NodeStub:
        with self._lock:
            stub = self._stubs.get(node_id)
            if stub is None:
                channel = self.dial(node_id, self.addresses[node_id])
                self._channels.append(channel)
                stub = self._stubs[node_id] = pb_grpc.NodeStub(channel)
            return stub

    def _call(self, node_id: str, call: Callable[[pb_grpc.NodeStub], object]) -> object:
        try:
            return call(self._stub(node_id))
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise Refused(f"{node_id}: {details}") from error
            raise Unreachable(f"{node_id}: {code.name if code else 'error'}: {details}") from error

    def status(self, node_id: str) -> pb.NodeStatus:
        reply = self._call(
            node_id, lambda s: s.GetStatus(pb.GetStatusRequest(), timeout=CALL_TIMEOUT)
        )
        assert isinstance(reply, pb.NodeStatus)
        return reply

    def epoch(self, node_id: str) -> int:
        return int(self.status(node_id).epoch)

    def prepare(self, node_id: str, target: RestoreTarget) -> tuple[bool, str]:
        request = pb.PrepareRestoreRequest(target=target_to_pb(target))
        reply = self._call(node_id, lambda s: s.PrepareRestore(request, timeout=CALL_TIMEOUT))
        assert isinstance(reply, pb.PrepareRestoreReply)
        return bool(reply.ok), reply.reason

    def commit(self, node_id: str, restore: int, epoch: int) -> None:
        request = pb.CommitRestoreRequest(restore=restore, epoch=epoch)
        self._call(node_id, lambda s: s.CommitRestore(request, timeout=CALL_TIMEOUT))

    def abort(self, node_id: str, restore: int) -> None:
        request = pb.AbortRestoreRequest(restore=restore)
        self._call(node_id, lambda s: s.AbortRestore(request, timeout=CALL_TIMEOUT))

    def close(self) -> None:
        with self._lock:
            channels, self._channels, self._stubs = self._channels, [], {}
        for channel in channels:
            channel.close()
