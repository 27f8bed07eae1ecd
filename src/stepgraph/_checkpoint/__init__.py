"""Checkpoints: the safe codec and the stores (the lowest layer)."""

from ._codec import TypeRegistry, decode, dumps, encode, loads, type_key
from ._model import Checkpoint, CheckpointInfo, CheckpointStore, blob_hash
from ._sqlite import SqliteCheckpointStore
from ._store import BaseStore, MemoryCheckpointStore

__all__ = [
    "BaseStore",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "SqliteCheckpointStore",
    "TypeRegistry",
    "blob_hash",
    "decode",
    "dumps",
    "encode",
    "loads",
    "type_key",
]
