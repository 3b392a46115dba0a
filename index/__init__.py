"""Sharded FAISS databases: build, search, metadata store and manifest (needs numpy and faiss only).

A database folder holds ``manifest.json``, ``shard_NNNNN.faiss`` files (inner product over L2-normalised
float32 vectors), ``trained.faiss`` for IVF / PQ factories, and ``store.sqlite`` (id -> metadata).
"""

from index.build import ShardWriter, build_index, prepare_vectors
from index.factory import (
    FactoryChoice,
    ResourceError,
    TuneResult,
    choose_factory,
    estimate_bytes,
    make_index,
    tune_nprobe,
)
from index.manifest import IndexFormatError, Manifest, ShardInfo, SpaceMismatchError, check_space, verify
from index.sharded import ShardedIndex
from index.store import STORE_FILE, Store, StoreError

__all__ = [
    "STORE_FILE",
    "FactoryChoice",
    "IndexFormatError",
    "Manifest",
    "ResourceError",
    "ShardInfo",
    "ShardWriter",
    "ShardedIndex",
    "SpaceMismatchError",
    "Store",
    "StoreError",
    "TuneResult",
    "build_index",
    "check_space",
    "choose_factory",
    "estimate_bytes",
    "make_index",
    "prepare_vectors",
    "tune_nprobe",
    "verify",
]
