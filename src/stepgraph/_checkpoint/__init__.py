"""Checkpoints: the safe codec and the stores (the lowest layer)."""

from ._codec import TypeRegistry, decode, dumps, encode, loads, type_key
from ._leases import deleting, holding, new_holder
from ._memory import MemoryCheckpointStore
from ._model import (
    Checkpoint,
    CheckpointInfo,
    CheckpointStore,
    RunInfo,
    answered_twice,
    blob_hash,
)
from ._postgres import PostgresCheckpointStore
from ._sqlite import SqliteCheckpointStore
from ._store import RUNNING_STATUSES, TERMINAL_STATUSES, BaseStore

__all__ = [
    "RUNNING_STATUSES",
    "TERMINAL_STATUSES",
    "BaseStore",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "PostgresCheckpointStore",
    "RunInfo",
    "SqliteCheckpointStore",
    "TypeRegistry",
    "answered_twice",
    "blob_hash",
    "decode",
    "dumps",
    "encode",
    "loads",
    "deleting",
    "holding",
    "new_holder",
    "type_key",
]
