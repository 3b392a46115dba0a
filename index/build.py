"""Write a database folder: vectors -> faiss shards (+ metadata rows -> store), resumable and reproducible.

Commit protocol for shard ``i`` (every file through a temp name and ``os.replace``)::

    1. shard_0000i.faiss         the shard's index (a clone of the trained empty index + its vectors)
    2. store.sqlite              one transaction: the shard's rows, its duplicates and a progress row
    3. manifest.json             lists shard i: from here on the shard exists

A run killed anywhere restarts from the manifest: shards it lists are skipped (the caller skips
:meth:`ShardWriter.completed_count` input items), a shard file not listed is rewritten with the same bytes,
and store rows committed for a shard the manifest does not list yet are kept rather than written twice, so the
finished folder is byte-identical to that of an uninterrupted run (``created`` aside, which the first run
sets; pass ``created`` to pin it). Nothing in a shard file depends on the clock.

Checkpoints within a shard: a shard holds 500,000 vectors by default, hours of encoding on a CPU, so the
writer also logs what :meth:`ShardWriter.add` received since the last committed shard in checkpoint files
(``.partial/<input position>.npz``, :mod:`index.input_log`: the rows, the raw vectors of the new rows, which rows were new), one every
``checkpoint_rows`` rows or ``checkpoint_seconds`` seconds. A resumed writer replays them through
:meth:`ShardWriter.add` before the caller adds anything (the same vectors in the same order: the same bytes)
and counts them in :meth:`ShardWriter.completed_count`, so a killed build loses at most one checkpoint
interval of encoding. Files wholly before a committed shard's end are deleted at each commit; the folder goes
at :meth:`ShardWriter.close`.

IVF / PQ factories are trained once, on the first ``train_size`` vectors of the stream (or on a sample given
to :meth:`ShardWriter.train`), and saved as ``trained.faiss``: every shard is a clone of it, so all shards
share centroids. Their nprobe is tuned at :meth:`ShardWriter.close` against exact search on a sample of
queries, and stored in the manifest.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.build_folder import TEMP_FILE, load_trained, open_build_folder, write_index_atomic
from index.factory import choose_factory, make_index, parse_factory, tune_nprobe
from index.input_log import InputLog
from index.manifest import (
    TRAINED_FILE,
    Manifest,
    ShardInfo,
    sha256_file,
)
from index.store import STORE_FILE, Store
from index.store_groups import StoreGroups
from index.tuning_truth import (
    ShardTruth,
    is_tuning_file,
    load_queries,
    merged_truth,
    sample_queries,
)
from index.vectors import prepare_vectors

logger = logging.getLogger(__name__)

SHARD_FILE = "shard_{:05d}.faiss"
PARTIAL_DIR = ".partial"  # checkpoints of the open shard's inputs


@dataclass
class _Chunk:
    """Vectors waiting to be added, with their rows and the duplicates seen among them."""

    vectors: np.ndarray
    rows: list[dict[str, Any]] | None
    dups: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (index of the next new item, row)


class ShardWriter:
    """Stream vectors (and their metadata rows) into a sharded database folder.

    Example::

        with ShardWriter(folder, 768, "Flat", space_id="labse-768", encoder_id="LaBSE") as w:
            skip = w.completed_count()          # > 0 when resuming: skip that many input items
            for batch in batches(items[skip:]):
                w.add(embed(batch), rows=[s.to_dict() for s in batch])

    Args:
        folder: the database folder (created; an existing unfinished build in it is resumed).
        dim: vector dimension.
        factory: a faiss factory string (see :func:`index.factory.parse_factory`) or ``"auto"`` (then
            ``expected_count`` and ``memory_budget_bytes`` pick one with :func:`index.factory.choose_factory`).
        space_id: embedding space id of the vectors (e.g. ``labse-768``).
        encoder_id: model id or path of the encoder that made them.
        kind: ``"text"`` or ``"speech"``.
        name: database name (default: the folder's name).
        shard_size: vectors per shard file.
        store: write ``store.sqlite`` from the rows given to :meth:`add`.
        dedup: store exact duplicate texts once (text databases; needs ``store``).
        train_size: vectors to train IVF / PQ on (default: 64 per list, at least 10,000 for PQ).
        tune_queries: number of stream vectors to tune nprobe with (0 disables tuning), or a (nq, dim) array
            of held-out queries.
        tune_k: the k of the recall@k that tuning targets.
        target_recall: recall@k that the stored nprobe reaches.
        seed: seed of the query sample.
        created: ISO time to record as the creation time (default: now, on the first run only).
        extra: free-form JSON-able metadata kept in the manifest.
        append: reopen a complete database to add shards after its own.
        checkpoint_rows: write a checkpoint of the open shard's inputs every this many rows (0: never).
        checkpoint_seconds: ... or when this many seconds passed since the last one (0: by rows only).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        dim: int,
        factory: str = "Flat",
        *,
        space_id: str,
        encoder_id: str = "",
        kind: str = "text",
        name: str | None = None,
        shard_size: int = 500_000,
        store: bool = True,
        dedup: bool = False,
        train_size: int | None = None,
        tune_queries: int | np.ndarray = 1000,
        tune_k: int = 10,
        target_recall: float = 0.95,
        seed: int = 0,
        expected_count: int | None = None,
        memory_budget_bytes: int | None = None,
        created: str | None = None,
        extra: dict[str, Any] | None = None,
        append: bool = False,
        checkpoint_rows: int = 50_000,
        checkpoint_seconds: float = 300.0,
    ) -> None:
        self.folder = Path(folder)
        if dim <= 0:
            raise ValueError(f"dim={dim}: must be positive")
        if shard_size <= 0:
            raise ValueError(f"shard_size={shard_size}: must be positive")
        if dedup and not store:
            raise ValueError("dedup=True needs store=True (duplicates are found through the store)")
        if kind not in ("text", "speech"):
            raise ValueError(f"kind={kind!r}: use 'text' or 'speech'")
        if factory == "auto":
            if not expected_count or not memory_budget_bytes:
                raise ValueError("factory='auto' needs expected_count and memory_budget_bytes")
            choice = choose_factory(expected_count, dim, memory_budget_bytes)
            logger.info("factory %s (%s)", choice.factory, choice.reason)
            factory = choice.factory
        parts = parse_factory(factory)
        self.dim = dim
        self.factory = factory
        self.nlist: int | None = parts["nlist"]
        self.shard_size = shard_size
        self.dedup = dedup
        self.tune_k = tune_k
        self.target_recall = target_recall
        if train_size is None and self.nlist:
            train_size = max(64 * self.nlist, 10_000 if parts.get("codes") == "PQ" else 0)
        self.train_size = int(train_size or 0)
        self._given_queries: np.ndarray | None = None
        n_queries = 0
        if isinstance(tune_queries, np.ndarray):
            self._given_queries = prepare_vectors(tune_queries, dim)
            n_queries = len(self._given_queries)
        else:
            n_queries = int(tune_queries)
        self._tuning = self.nlist is not None and n_queries > 0
        self._n_queries = n_queries
        self._seed = seed
        build = {
            "shard_size": shard_size,
            "store": store,
            "dedup": dedup,
            "train_size": self.train_size,
            "tune_queries": "given" if self._given_queries is not None else n_queries,
            "tune_k": tune_k,
            "target_recall": target_recall,
            "seed": seed,
        }
        wanted = Manifest(
            name=name or self.folder.name,
            kind=kind,
            dim=dim,
            space_id=space_id,
            encoder_id=encoder_id,
            factory=factory,
            nlist=self.nlist,
            created=created or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            build=build,
            extra=dict(extra or {}),
        )
        self.manifest = open_build_folder(self.folder, wanted, append)
        if "append_base" in self.manifest.extra:
            self._tuning = False
        self._store: Store | None = None
        if store:
            path = self.folder / STORE_FILE
            try:  # a file left without tables by a run killed while creating it is initialised afresh
                self._store = Store.create(path, kind)
            except FileExistsError:
                self._store = Store.open(path, readonly=False)
        self._template: faiss.Index | None = load_trained(self.folder, self.manifest, self.factory, self.dim)
        self._queries: np.ndarray | None = self._load_queries()
        self._pending: list[_Chunk] = []
        self._pending_n = 0
        self._pending_texts: dict[str, int] = {}
        self._next_id = self.manifest.ntotal  # next global id to assign
        self._next_input = self.manifest.inputs  # input position of the next row given to add()
        self._shard: faiss.Index | None = None
        self._open_shard()
        self._t0 = time.perf_counter()
        self._added_since = 0
        self._input_log = InputLog(self.folder / PARTIAL_DIR, dim, checkpoint_rows, checkpoint_seconds)
        if self.manifest.complete:
            self._input_log.remove()
        else:
            try:
                replayed = self._input_log.replay(self._next_input, self.add)
            except BaseException:
                self.abort()  # close the store: the caller never gets this writer
                raise
            if replayed:
                logger.info(
                    "%s: replayed %d inputs from checkpoints of the open shard", self.folder.name, replayed
                )

    # -- public API -------------------------------------------------------------------------------------

    def completed_count(self) -> int:
        """Input items (duplicates included) already committed: a resumed caller skips that many.

        When appending, only the items of this append count (the base database's are not the caller's input).
        Items replayed from checkpoints of the open shard count too (they are in the writer already).
        """
        return self._next_input - int(self.manifest.extra.get("append_base", 0))

    @property
    def ntotal(self) -> int:
        """Vectors accepted so far (committed or not)."""
        return self._next_id

    def duplicate_mask(self, texts: list[str]) -> np.ndarray:
        """(n,) bool: True for texts that :meth:`add` would drop as duplicates (changes nothing).

        Lets a caller skip encoding duplicates: pass :meth:`add` the vectors of the False rows only.
        """
        if not self.dedup:
            return np.zeros(len(texts), dtype=bool)
        return np.array([k is not None for k in self._lookup(texts)], dtype=bool)

    def train(self, sample: np.ndarray) -> None:
        """Train the IVF / PQ quantizers on ``sample`` ((n, dim) float) instead of the stream's head.

        No-op for Flat, and when ``trained.faiss`` exists (a resumed build keeps its centroids).
        """
        if self.nlist is None or self._template is not None:
            return
        self._train(prepare_vectors(sample, self.dim))
        self._drain()

    def add(self, vectors: np.ndarray, rows: list[dict[str, Any]] | None = None) -> int:
        """Add a batch.

        Args:
            vectors: (n, dim) float embeddings (normalised here), or with ``dedup`` the vectors of the rows
                that :meth:`duplicate_mask` marks False only.
            rows: one metadata dict per input item (``text``, ``id`` (-> ``ext_id``), ``source``, ``line``,
                ``lang`` / ``path``, ``start``, ``duration``...); required when the writer has a store.

        Returns:
            Number of vectors accepted (duplicates excluded).
        """
        if self.manifest.complete:
            raise ValueError(f"{self.folder}: the database is complete; build a new one to add vectors")
        raw = np.asarray(vectors, dtype=np.float32)  # what a checkpoint keeps (normalising is not idempotent)
        x = prepare_vectors(vectors, self.dim)
        if self._store is None and rows is not None:
            raise ValueError("rows given but this writer has no store; pass store=True to keep them")
        if self._store is not None and rows is None:
            raise ValueError(
                "rows are required: this writer keeps a store (pass store=False for vectors only)"
            )
        if rows is None:
            chunk = _Chunk(vectors=x, rows=None)
            self._input_log.remember(self._next_input, raw, np.ones(len(x), dtype=bool), None)
            self._next_input += len(x)
        else:
            rows = [_row(r) for r in rows]
            kept: list[int | None] = [None] * len(rows)
            if self.dedup:
                texts = [r.get("text") for r in rows]
                if any(not isinstance(t, str) for t in texts):
                    raise ValueError("dedup needs a 'text' string in every row")
                kept = self._lookup(texts)  # type: ignore[arg-type]
            is_new = np.array([k is None for k in kept], dtype=bool)
            n_new = int(is_new.sum())
            if len(x) == len(rows):
                x = x[is_new] if n_new < len(rows) else x
                raw = raw[is_new] if n_new < len(rows) else raw
            elif len(x) != n_new or not self.dedup:
                raise ValueError(
                    f"got {len(x)} vectors but {len(rows)} rows ({n_new} new); pass one vector per row, or with "
                    "dedup one per row that duplicate_mask marks False"
                )
            self._input_log.remember(self._next_input, raw, is_new, rows)
            chunk = _Chunk(vectors=x, rows=[])
            first_input, self._next_input = self._next_input, self._next_input + len(rows)
            for pos, (r, k) in enumerate(zip(rows, kept, strict=True), start=first_input):
                if k is None:
                    r["id"] = self._next_id + len(chunk.rows)  # type: ignore[arg-type]
                    if self.dedup:
                        self._pending_texts[r["text"]] = r["id"]
                    chunk.rows.append(r)  # type: ignore[union-attr]
                else:
                    # seq: the duplicate's position in the input (what the store documents), the same whatever
                    # the batches and resumes that brought it here
                    chunk.dups.append((len(chunk.rows), {**r, "id": k, "seq": pos}))  # type: ignore[arg-type]
        self._next_id += len(chunk.vectors)
        self._pending.append(chunk)
        self._pending_n += len(chunk.vectors)
        if self._template is None and self._pending_n >= self.train_size:
            self._train(np.concatenate([c.vectors for c in self._pending])[: self.train_size])
        self._drain()
        return len(chunk.vectors)

    def close(self) -> Manifest:
        """Flush the last shard, tune nprobe, mark the manifest complete and return it."""
        if not self.manifest.complete:
            if self._template is None and self._pending_n:
                self._train(np.concatenate([c.vectors for c in self._pending])[: self.train_size])
            self._drain()
            if self._cur_count or self._cur_inputs:
                self._flush()
            if self.manifest.ntotal == 0:
                logger.warning("%s: no vectors were added; the database is empty", self.folder)
            self._finish()
        if self._store is not None:
            self._store.close()
            self._store = None
        for p in self.folder.iterdir():
            if is_tuning_file(p.name) or TEMP_FILE.match(p.name):
                p.unlink()
        self._input_log.remove()
        return self.manifest

    def abort(self) -> None:
        """Stop without finishing: the uncommitted shard is dropped; the folder stays resumable."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- folder state -----------------------------------------------------------------------------------

    def _load_queries(self) -> np.ndarray | None:
        if not self._tuning:
            return None
        if self._given_queries is not None:
            return self._given_queries
        return load_queries(self.folder) if self._template is not None else None

    # -- internals --------------------------------------------------------------------------------------

    def _lookup(self, texts: list[str]) -> list[int | None]:
        """Kept id for each text seen before (stored, pending, or earlier in ``texts``), None for new texts."""
        # below=next id: a resumed build must not find the rows it is about to re-add
        stored = self._store.find_texts(texts, below=self._next_id) if self._store else [None] * len(texts)
        first_in_batch: dict[str, int] = {}
        nxt = self._next_id
        out: list[int | None] = []
        for t, s in zip(texts, stored, strict=True):
            k = self._pending_texts.get(t, s)
            if k is None:
                k = first_in_batch.get(t)
            if k is None:
                first_in_batch[t] = nxt
                nxt += 1
            out.append(k)
        return out

    def _train(self, sample: np.ndarray) -> None:
        assert self.nlist is not None
        if len(sample) < self.nlist:
            raise ValueError(
                f"factory {self.factory} needs at least {self.nlist} training vectors, got {len(sample)}: use "
                "'Flat' or fewer lists for this few vectors"
            )
        if self._tuning and self._queries is None:
            # saved before trained.faiss: a folder with trained.faiss always has its queries
            self._queries = sample_queries(self.folder, sample, self._n_queries, self._seed)
        t0 = time.perf_counter()
        index = make_index(self.factory, self.dim)
        index.train(sample)
        write_index_atomic(index, self.folder / TRAINED_FILE)
        logger.info("trained %s on %d vectors in %.1f s", self.factory, len(sample), time.perf_counter() - t0)
        self._template = index
        self._open_shard()

    def _open_shard(self) -> None:
        """Start the shard numbered len(manifest.shards)."""
        self._shard_no = len(self.manifest.shards)
        self._cur_first = self.manifest.ntotal
        self._cur_count = 0
        self._cur_inputs = 0
        self._shard = faiss.clone_index(self._template) if self._template is not None else None
        self._truth = ShardTruth(self._queries, self.tune_k) if self._queries is not None else None
        # rows already committed by a killed run (store ahead of the manifest) are not written twice
        self._groups = (
            StoreGroups(self._store, skip=self._store.shard_done(self._shard_no))
            if self._store is not None
            else None
        )

    def _drain(self) -> None:
        if self._template is None:
            return
        while self._pending:
            chunk = self._pending.pop(0)
            self._pending_n -= len(chunk.vectors)
            self._add_chunk(chunk)

    def _add_chunk(self, chunk: _Chunk) -> None:
        m = len(chunk.vectors)
        j = 0
        d = 0
        while True:
            # duplicates seen before new item j belong to the shard that is open now
            while d < len(chunk.dups) and chunk.dups[d][0] <= j:
                self._put_dup(chunk.dups[d][1])
                d += 1
            if j == m:
                break
            if self._cur_count == self.shard_size:
                self._flush()
            take = min(m - j, self.shard_size - self._cur_count)
            self._put(
                chunk.vectors[j : j + take], chunk.rows[j : j + take] if chunk.rows is not None else None
            )
            j += take

    def _put(self, x: np.ndarray, rows: list[dict[str, Any]] | None) -> None:
        assert self._shard is not None
        self._shard.add(x)
        if self._truth is not None:
            self._truth.add(x, self._cur_first + self._cur_count)
        if rows is not None and self._groups is not None:
            self._forget_pending(self._groups.add_items(rows))
        self._cur_count += len(x)
        self._cur_inputs += len(x)
        self._added_since += len(x)
        if self._added_since >= 100_000:
            rate = self._added_since / max(1e-9, time.perf_counter() - self._t0)
            logger.info(
                "%s: %d vectors, %.0f vectors/s", self.folder.name, self._cur_first + self._cur_count, rate
            )
            self._t0, self._added_since = time.perf_counter(), 0

    def _put_dup(self, row: dict[str, Any]) -> None:
        if self._groups is not None:
            self._groups.add_duplicate(row)
        self._cur_inputs += 1

    def _forget_pending(self, written: list[dict[str, Any]]) -> None:
        """Rows now in the store are found by its own lookups: drop them from the pending texts."""
        for r in written:
            if "text" in r:
                self._pending_texts.pop(r["text"], None)

    def _flush(self) -> None:
        """Commit the open shard: shard file, then store transaction, then manifest."""
        assert self._shard is not None
        no = self._shard_no
        path = self.folder / SHARD_FILE.format(no)
        write_index_atomic(self._shard, path)
        if self._truth is not None:
            self._truth.save(self.folder, no)
        if self._store is not None and self._groups is not None:
            self._forget_pending(self._groups.write(final=True))
            if not self._groups.skip:
                self._store.begin()
                self._store.mark_shard(no, self._cur_first, self._cur_count, self._cur_inputs)
            self._store.commit()
        info = ShardInfo(
            SHARD_FILE.format(no), self._cur_first, self._cur_count, sha256_file(path), self._cur_inputs
        )
        self.manifest.shards.append(info)
        self.manifest.save(self.folder)
        logger.info("%s: shard %d committed (%d vectors)", self.folder.name, no, self._cur_count)
        self._input_log.drop_before(self.manifest.inputs)
        self._open_shard()

    def _finish(self) -> None:
        if "append_base" in self.manifest.extra:
            # The tuning sample of the first build is gone; the stored nprobe stays (logged, not re-tuned).
            del self.manifest.extra["append_base"]
            self.manifest.extra["appends"] = int(self.manifest.extra.get("appends", 0)) + 1
            if self.nlist is not None:
                logger.info(
                    "%s: appended; nprobe %s kept from the first build", self.folder, self.manifest.nprobe
                )
        elif self.nlist is not None:
            self.manifest.nprobe = max(1, self.nlist // 16)
            if self._queries is not None and self.manifest.ntotal:
                self._tune()
        self.manifest.complete = True
        self.manifest.save(self.folder)

    def _tune(self) -> None:
        from index.sharded import ShardedIndex  # build <- sharded would be a cycle at import time

        assert self._queries is not None
        truth = merged_truth(self.folder, len(self.manifest.shards), len(self._queries), self.tune_k)
        k = min(self.tune_k, self.manifest.ntotal)
        sharded = ShardedIndex.load(self.folder, allow_incomplete=True)
        result = tune_nprobe(
            sharded, self._queries, k=k, target_recall=self.target_recall, gt_ids=truth[:, :k]
        )
        self.manifest.nprobe = result.nprobe
        self.manifest.build["tuning"] = {
            "queries": len(self._queries),
            "k": k,
            "recall_at_1": round(result.recall_at_1, 6),
            "recall_at_k": round(result.recall_at_k, 6),
        }


def build_index(
    folder: str | os.PathLike[str],
    vectors: np.ndarray,
    rows: list[dict[str, Any]] | None = None,
    *,
    batch_size: int = 65_536,
    **writer_kwargs: Any,
) -> Manifest:
    """Build (or resume) a database from in-memory vectors: :class:`ShardWriter` fed in batches.

    Args:
        folder: database folder.
        vectors: (n, dim) float embeddings.
        rows: n metadata dicts (required unless ``store=False``).
        batch_size: vectors per :meth:`ShardWriter.add` call.
        **writer_kwargs: passed to :class:`ShardWriter` (``space_id`` is required; ``factory`` defaults to Flat).

    Returns:
        The manifest of the finished database.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors have shape {vectors.shape}; expected (n, dim)")
    with ShardWriter(folder, vectors.shape[1], **writer_kwargs) as writer:
        if writer.dedup:
            raise ValueError("build_index cannot resume a deduplicating build by position; use ShardWriter")
        start = writer.completed_count()
        for i in range(start, len(vectors), batch_size):
            writer.add(vectors[i : i + batch_size], rows[i : i + batch_size] if rows is not None else None)
    return writer.manifest


def _row(row: Any) -> dict[str, Any]:
    """A store row from a dict or a record with ``to_dict`` (Sentence, Segment); ``id`` becomes ``ext_id``."""
    data = dict(row.to_dict() if hasattr(row, "to_dict") else row)
    if "id" in data:
        ext = data.pop("id")
        data.setdefault("ext_id", ext)
    return data
