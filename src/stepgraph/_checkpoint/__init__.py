"""Checkpoints: the safe codec and the stores (the lowest layer)."""

from ._codec import (
    SnapshotPart,
    TypeRegistry,
    collecting_parts,
    decode,
    dumps,
    encode,
    loads,
    reading_parts,
    type_key,
)
from ._leases import deleting, holding, new_holder
from ._memory import MemoryCheckpointStore
from ._model import (
    ANSWER_FORK_HINT,
    Checkpoint,
    CheckpointInfo,
    CheckpointStore,
    RunInfo,
    answered_twice,
    blob_hash,
)
from ._postgres import PostgresCheckpointStore
from ._sqlite import SqliteCheckpointStore
from ._store import (
    RUNNING_STATUSES,
    SECRET_HINT,
    TERMINAL_STATUSES,
    BaseStore,
    going_on_from,
)

__all__ = [
    "ANSWER_FORK_HINT",
    "RUNNING_STATUSES",
    "SECRET_HINT",
    "TERMINAL_STATUSES",
    "BaseStore",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "PostgresCheckpointStore",
    "RunInfo",
    "SnapshotPart",
    "SqliteCheckpointStore",
    "TypeRegistry",
    "answered_twice",
    "going_on_from",
    "blob_hash",
    "collecting_parts",
    "decode",
    "dumps",
    "encode",
    "loads",
    "deleting",
    "holding",
    "new_holder",
    "reading_parts",
    "type_key",
]
