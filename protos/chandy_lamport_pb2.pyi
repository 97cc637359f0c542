from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("sender", "receiver", "seq", "transfer", "marker", "lamport", "bundle", "epoch")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    LAMPORT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    sender: str
    receiver: str
    seq: int
    transfer: Transfer
    marker: Marker
    lamport: int
    bundle: _containers.RepeatedCompositeFieldContainer[Frame]
    epoch: int
    def __init__(self, sender: _Optional[str] = ..., receiver: _Optional[str] = ..., seq: _Optional[int] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., marker: _Optional[_Union[Marker, _Mapping]] = ..., lamport: _Optional[int] = ..., bundle: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., epoch: _Optional[int] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("transfer_seq", "amount")
    TRANSFER_SEQ_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    transfer_seq: int
    amount: int
    def __init__(self, transfer_seq: _Optional[int] = ..., amount: _Optional[int] = ...) -> None: ...

class Marker(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "epoch", "prepared_epoch")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREPARED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    epoch: int
    prepared_epoch: int
    def __init__(self, seq: _Optional[int] = ..., epoch: _Optional[int] = ..., prepared_epoch: _Optional[int] = ...) -> None: ...

class StartSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...

class StartSnapshotReply(_message.Message):
    __slots__ = ("snapshot_id", "already_recorded")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_RECORDED_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    already_recorded: bool
    def __init__(self, snapshot_id: _Optional[str] = ..., already_recorded: _Optional[bool] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "balance", "active_snapshots", "unacknowledged_frames", "channels", "workload_running", "epoch", "restore_phase", "not_serving_reason", "prepared_restore")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    UNACKNOWLEDGED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_RUNNING_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RESTORE_PHASE_FIELD_NUMBER: _ClassVar[int]
    NOT_SERVING_REASON_FIELD_NUMBER: _ClassVar[int]
    PREPARED_RESTORE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    balance: int
    active_snapshots: _containers.RepeatedScalarFieldContainer[str]
    unacknowledged_frames: int
    channels: _containers.RepeatedCompositeFieldContainer[ChannelStatus]
    workload_running: bool
    epoch: int
    restore_phase: str
    not_serving_reason: str
    prepared_restore: int
    def __init__(self, node_id: _Optional[str] = ..., balance: _Optional[int] = ..., active_snapshots: _Optional[_Iterable[str]] = ..., unacknowledged_frames: _Optional[int] = ..., channels: _Optional[_Iterable[_Union[ChannelStatus, _Mapping]]] = ..., workload_running: _Optional[bool] = ..., epoch: _Optional[int] = ..., restore_phase: _Optional[str] = ..., not_serving_reason: _Optional[str] = ..., prepared_restore: _Optional[int] = ...) -> None: ...

class ChannelStatus(_message.Message):
    __slots__ = ("peer", "direction", "sent_or_received", "unacked", "connected", "unacked_amount")
    PEER_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    SENT_OR_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    UNACKED_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    UNACKED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    peer: str
    direction: str
    sent_or_received: int
    unacked: int
    connected: bool
    unacked_amount: int
    def __init__(self, peer: _Optional[str] = ..., direction: _Optional[str] = ..., sent_or_received: _Optional[int] = ..., unacked: _Optional[int] = ..., connected: _Optional[bool] = ..., unacked_amount: _Optional[int] = ...) -> None: ...

class BeginSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_id", "initiators")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    INITIATORS_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    initiators: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, snapshot_id: _Optional[str] = ..., initiators: _Optional[_Iterable[str]] = ...) -> None: ...

class BeginSnapshotReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecordedMessage(_message.Message):
    __slots__ = ("transfer_seq", "amount")
    TRANSFER_SEQ_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    transfer_seq: int
    amount: int
    def __init__(self, transfer_seq: _Optional[int] = ..., amount: _Optional[int] = ...) -> None: ...

class ChannelState(_message.Message):
    __slots__ = ("sender", "messages")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    sender: str
    messages: _containers.RepeatedCompositeFieldContainer[RecordedMessage]
    def __init__(self, sender: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[RecordedMessage, _Mapping]]] = ...) -> None: ...

class LocalSnapshot(_message.Message):
    __slots__ = ("snapshot_id", "node_id", "balance", "sent", "received", "channels", "initiated", "recorded_at", "completed_at", "complete", "open_channels", "timeline", "lamport_recorded", "epoch")
    class SentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ReceivedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    INITIATED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    OPEN_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    LAMPORT_RECORDED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    node_id: str
    balance: int
    sent: _containers.ScalarMap[str, int]
    received: _containers.ScalarMap[str, int]
    channels: _containers.RepeatedCompositeFieldContainer[ChannelState]
    initiated: bool
    recorded_at: str
    completed_at: str
    complete: bool
    open_channels: _containers.RepeatedScalarFieldContainer[str]
    timeline: _containers.RepeatedCompositeFieldContainer[TimelineEvent]
    lamport_recorded: int
    epoch: int
    def __init__(self, snapshot_id: _Optional[str] = ..., node_id: _Optional[str] = ..., balance: _Optional[int] = ..., sent: _Optional[_Mapping[str, int]] = ..., received: _Optional[_Mapping[str, int]] = ..., channels: _Optional[_Iterable[_Union[ChannelState, _Mapping]]] = ..., initiated: _Optional[bool] = ..., recorded_at: _Optional[str] = ..., completed_at: _Optional[str] = ..., complete: _Optional[bool] = ..., open_channels: _Optional[_Iterable[str]] = ..., timeline: _Optional[_Iterable[_Union[TimelineEvent, _Mapping]]] = ..., lamport_recorded: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class TimelineEvent(_message.Message):
    __slots__ = ("kind", "peer", "seq", "amount", "snapshot_id", "at", "lamport")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    LAMPORT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    peer: str
    seq: int
    amount: int
    snapshot_id: str
    at: str
    lamport: int
    def __init__(self, kind: _Optional[str] = ..., peer: _Optional[str] = ..., seq: _Optional[int] = ..., amount: _Optional[int] = ..., snapshot_id: _Optional[str] = ..., at: _Optional[str] = ..., lamport: _Optional[int] = ...) -> None: ...

class ReportReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...

class SnapshotDocument(_message.Message):
    __slots__ = ("snapshot_id", "status", "json")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    status: str
    json: str
    def __init__(self, snapshot_id: _Optional[str] = ..., status: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotList(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[SnapshotDocument]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[SnapshotDocument, _Mapping]]] = ...) -> None: ...

class WaitSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_id", "timeout_seconds")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    timeout_seconds: float
    def __init__(self, snapshot_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class SnapshotProgress(_message.Message):
    __slots__ = ("snapshot_id", "status", "reported", "missing", "json", "recorded")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    status: str
    reported: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    json: str
    recorded: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, snapshot_id: _Optional[str] = ..., status: _Optional[str] = ..., reported: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ..., json: _Optional[str] = ..., recorded: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreTarget(_message.Message):
    __slots__ = ("restore", "epoch", "snapshot_id", "balance", "resend")
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    RESEND_FIELD_NUMBER: _ClassVar[int]
    restore: int
    epoch: int
    snapshot_id: str
    balance: int
    resend: _containers.RepeatedCompositeFieldContainer[ResendChannel]
    def __init__(self, restore: _Optional[int] = ..., epoch: _Optional[int] = ..., snapshot_id: _Optional[str] = ..., balance: _Optional[int] = ..., resend: _Optional[_Iterable[_Union[ResendChannel, _Mapping]]] = ...) -> None: ...

class ResendChannel(_message.Message):
    __slots__ = ("peer", "amounts")
    PEER_FIELD_NUMBER: _ClassVar[int]
    AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    peer: str
    amounts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, peer: _Optional[str] = ..., amounts: _Optional[_Iterable[int]] = ...) -> None: ...

class PrepareRestoreRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: RestoreTarget
    def __init__(self, target: _Optional[_Union[RestoreTarget, _Mapping]] = ...) -> None: ...

class PrepareRestoreReply(_message.Message):
    __slots__ = ("ok", "reason", "epoch")
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    reason: str
    epoch: int
    def __init__(self, ok: _Optional[bool] = ..., reason: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class CommitRestoreRequest(_message.Message):
    __slots__ = ("restore", "epoch")
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    restore: int
    epoch: int
    def __init__(self, restore: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class AbortRestoreRequest(_message.Message):
    __slots__ = ("restore",)
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    restore: int
    def __init__(self, restore: _Optional[int] = ...) -> None: ...

class RestoreAck(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class SetWorkloadRequest(_message.Message):
    __slots__ = ("running",)
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    running: bool
    def __init__(self, running: _Optional[bool] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("snapshot_id", "timeout_seconds")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    timeout_seconds: float
    def __init__(self, snapshot_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class RestoreReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ListRestoresRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestoreList(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, json: _Optional[_Iterable[str]] = ...) -> None: ...
