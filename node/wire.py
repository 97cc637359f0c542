"""Conversions between the core's dataclasses and the protobuf wire messages.

The core never sees protobuf; the transport never builds core payloads by
hand. Everything that crosses that line goes through this module.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.timeutil import iso_utc
from node.core import LocalSnapshot, Marker, Payload, Transfer
from node.timeline import TimelineEvent
from protos import chandy_lamport_pb2 as pb


class MalformedFrame(ValueError):
    """A frame without a body (neither a transfer nor a marker)."""


def frame_for(
    sender: str, receiver: str, seq: int, payload: Payload, lamport: int = 0, epoch: int = 0
) -> pb.Frame:
    """The frame that carries `payload` as number `seq` on sender -> receiver,
    stamped with the sender's cluster `epoch` (node/restore.py)."""
    if isinstance(payload, Transfer):
        return pb.Frame(
            sender=sender,
            receiver=receiver,
            seq=seq,
            transfer=pb.Transfer(transfer_seq=payload.transfer_seq, amount=payload.amount),
            lamport=lamport,
            epoch=epoch,
        )
    return pb.Frame(
        sender=sender,
        receiver=receiver,
        seq=seq,
        marker=pb.Marker(snapshot_id=payload.snapshot_id),
        lamport=lamport,
        epoch=epoch,
    )


def payload_of(frame: pb.Frame) -> Payload:
    """The core payload a frame carries; MalformedFrame if it carries none."""
    body = frame.WhichOneof("body")
    if body == "transfer":
        return Transfer(frame.transfer.transfer_seq, frame.transfer.amount)
    if body == "marker":
        return Marker(frame.marker.snapshot_id)
    raise MalformedFrame(f"frame {frame.seq} from {frame.sender!r} has no body")


def transfer_amount(frame: pb.Frame) -> int:
    """Money a frame carries (0 for markers): what is in flight while unacked."""
    return frame.transfer.amount if frame.WhichOneof("body") == "transfer" else 0


def snapshot_report(
    snapshot: LocalSnapshot,
    recorded_at: str,
    completed_at: str,
    timeline: Sequence[TimelineEvent] = (),
    lamport_recorded: int = 0,
) -> pb.LocalSnapshot:
    """The collector's LocalSnapshot message for one finished local snapshot."""
    report = _local_snapshot(snapshot, recorded_at, timeline, lamport_recorded)
    report.completed_at = completed_at
    report.complete = True
    return report


def progress_report(
    snapshot: LocalSnapshot,
    open_channels: Sequence[str],
    recorded_at: str,
    timeline: Sequence[TimelineEvent] = (),
    lamport_recorded: int = 0,
) -> pb.LocalSnapshot:
    """The early report of a snapshot still recording (`NodeCore.progress`).

    `complete` is false, `completed_at` empty, and `open_channels` names the
    senders whose marker has not arrived yet.
    """
    report = _local_snapshot(snapshot, recorded_at, timeline, lamport_recorded)
    report.complete = False
    report.open_channels.extend(sorted(open_channels))
    return report


def timeline_event(event: TimelineEvent) -> pb.TimelineEvent:
    return pb.TimelineEvent(
        kind=event.kind,
        peer=event.peer,
        seq=event.seq,
        amount=event.amount,
        snapshot_id=event.snapshot_id,
        at=iso_utc(event.at),
        lamport=event.lamport,
    )


def _local_snapshot(
    snapshot: LocalSnapshot,
    recorded_at: str,
    timeline: Sequence[TimelineEvent],
    lamport_recorded: int,
) -> pb.LocalSnapshot:
    return pb.LocalSnapshot(
        snapshot_id=snapshot.snapshot_id,
        node_id=snapshot.node_id,
        balance=snapshot.balance,
        sent=dict(snapshot.sent),
        received=dict(snapshot.received),
        channels=[
            pb.ChannelState(
                sender=sender,
                messages=[
                    pb.RecordedMessage(transfer_seq=m.transfer_seq, amount=m.amount)
                    for m in messages
                ],
            )
            for sender, messages in sorted(snapshot.channels.items())
        ],
        initiated=snapshot.initiated,
        recorded_at=recorded_at,
        timeline=[timeline_event(event) for event in timeline],
        lamport_recorded=lamport_recorded,
        epoch=snapshot.epoch,
    )
