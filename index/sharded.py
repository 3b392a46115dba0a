"""Search a database folder: every shard searched, results merged exactly into global ids.

Each shard returns its own top-k; a ``faiss.ResultHeap`` keeps the best k over all shards, so the merged
result is the one a single index over all vectors would give (with IVF: the same probed lists, since all
shards share the trained centroids). Global id = shard offset + the shard's local id.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from index.manifest import IndexFormatError, Manifest, check_space, sha256_file

if TYPE_CHECKING:
    from index.torch_search import TorchFlatSearch

logger = logging.getLogger(__name__)

MMAP_MIN_BYTES = 64 << 20  # smaller shards are read into memory: mapping them buys nothing


class ShardedIndex:
    """The shards of one database, loaded; use :meth:`load`."""

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        shards: list[Any],
        on_gpu: bool = False,
        torch_search: TorchFlatSearch | None = None,
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self._shards = shards
        self._offsets = np.array([s.offset for s in manifest.shards], dtype=np.int64)
        self._ends = np.array([s.offset + s.count for s in manifest.shards], dtype=np.int64)
        if len(shards) == 1 and len(manifest.shards) > 1:  # shards merged at load time, ids already global
            self._offsets = np.zeros(1, dtype=np.int64)
            self._ends = np.array([manifest.ntotal], dtype=np.int64)
        self.on_gpu = on_gpu
        self._torch = torch_search  # exact search on a torch device instead of faiss (Flat shards only)
        self._lock = threading.Lock()
        # one index (e.g. shards merged at load) is searched by faiss itself: exactly a plain index's search
        self._shared = None if on_gpu or torch_search or len(shards) < 2 else _shared_coarse(shards)
        if self._shared is not None:
            for ivf in self._shared[2]:
                # under faiss's default parallel_mode 0, search_preassigned runs on one thread (IndexIVF.search
                # splits the queries over the threads before calling it); 3 splits them inside it instead
                if ivf.parallel_mode == 0:
                    ivf.parallel_mode = 3

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        *,
        mmap: bool = True,
        gpu: bool = False,
        fp16: bool = False,
        verify: bool = False,
        allow_incomplete: bool = False,
        mmap_min_bytes: int = MMAP_MIN_BYTES,
        device: str = "auto",
        backend: str = "auto",
    ) -> ShardedIndex:
        """Load the shards listed in ``<folder>/manifest.json``.

        Args:
            folder: the database folder.
            mmap: memory-map shards of at least ``mmap_min_bytes`` (``faiss.IO_FLAG_MMAP``) instead of reading
                them into memory. IVF shards read into memory that share their centroids are merged into one
                index with global ids, searched exactly as one plain faiss index (at 1.6M x 768 on 2 cores:
                0.96x a plain index's CPU time, mapped shards 1.19x; the merge reads everything: ~30-60 s and
                the index's size in RAM per process, where mapped shards share the page cache).
            gpu: copy the shards to all GPUs when faiss has GPUs; on a CPU-only faiss a warning is logged and
                search stays on the CPU.
            fp16: with ``gpu``, store vectors / lookup tables in float16 on the GPU.
            device: where search runs: ``auto`` (CUDA when torch sees it), ``cpu``, ``cuda`` or ``cuda:N``.
            backend: ``auto``, ``faiss`` or ``torch`` (:mod:`index.torch_search`: exact search of Flat shards
                as fp16 matrix products on CUDA, float32 on the CPU). ``auto`` on a CUDA device: faiss's GPU
                copy where this faiss build has GPUs, else torch for Flat databases, else faiss on the CPU
                (IVF / PQ need faiss-GPU to leave the CPU). On the CPU ``auto`` is faiss.
            verify: check each shard's SHA-256 against the manifest first (reads every byte).
            allow_incomplete: load a build that has not finished (used to tune it).

        Raises:
            IndexFormatError: missing or corrupt manifest or shard (the message names the file), an
                unfinished build, or a shard whose dim / count disagrees with the manifest.
        """
        folder = Path(folder)
        manifest = Manifest.load(folder)
        if not manifest.complete and not allow_incomplete:
            raise IndexFormatError(
                f"{folder / 'manifest.json'}: the build of {manifest.name!r} did not finish "
                f"({len(manifest.shards)} shards committed); resume it with the same command"
            )
        shards = []
        mapped = False
        for info in manifest.shards:
            path = folder / info.file
            if not path.is_file():
                raise IndexFormatError(
                    f"{path}: shard listed in the manifest is missing; rebuild the database"
                )
            if verify:
                digest = sha256_file(path)
                if digest != info.sha256:
                    raise IndexFormatError(
                        f"{path}: checksum mismatch (sha256 {digest}, manifest says {info.sha256}); the shard "
                        "is corrupt: rebuild the database"
                    )
            flags = (
                faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
                if mmap and path.stat().st_size >= mmap_min_bytes
                else 0
            )
            mapped = mapped or bool(flags)
            try:
                index = faiss.read_index(str(path), flags)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[-1][:200]
                raise IndexFormatError(
                    f"{path}: corrupt shard, faiss cannot read it ({reason}); rebuild the database"
                ) from exc
            if index.d != manifest.dim or index.ntotal != info.count:
                raise IndexFormatError(
                    f"{path}: shard has dim {index.d} and {index.ntotal} vectors but the manifest says dim "
                    f"{manifest.dim} and {info.count}; the folder is inconsistent: rebuild the database"
                )
            if index.metric_type != faiss.METRIC_INNER_PRODUCT:
                raise IndexFormatError(
                    f"{path}: shard does not use the inner-product metric; rebuild the database"
                )
            shards.append(index)
        on_gpu = False
        choice = "faiss" if gpu else _choose_backend(backend, device, shards, manifest.factory)
        torch_search = None
        if choice == "faiss-gpu" or gpu:
            shards, on_gpu = _to_gpus(shards, fp16)
        elif choice.startswith("torch:"):
            torch_search = _torch_search_of(shards, choice.split(":", 1)[1], manifest.dim)
        elif len(shards) > 1 and not mapped and _shared_coarse(shards) is not None:
            shards = [_merge_ivf_shards(shards, [info.offset for info in manifest.shards])]
        logger.info(
            "loaded %s: %d vectors in %d shards (%s)", folder, manifest.ntotal, len(shards), manifest.factory
        )
        return cls(folder, manifest, shards, on_gpu, torch_search)

    # -- properties -------------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of vectors over all shards."""
        return self.manifest.ntotal

    @property
    def backend(self) -> str:
        """What searches: ``faiss-cpu``, ``faiss-gpu`` or ``torch-<device>`` (e.g. ``torch-cuda:0``)."""
        if self._torch is not None:
            return f"torch-{self._torch.device}"
        return "faiss-gpu" if self.on_gpu else "faiss-cpu"

    @property
    def searched_indexes(self) -> int:
        """Number of faiss indexes a search visits: 1 when the shards were merged at load."""
        return len(self._shards)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def space_id(self) -> str:
        return self.manifest.space_id

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def nlist(self) -> int | None:
        """Number of inverted lists (None for Flat)."""
        return self.manifest.nlist

    @property
    def nprobe(self) -> int | None:
        """The tuned default nprobe (None for Flat)."""
        return self.manifest.nprobe

    def check_space(self, space_id: str) -> None:
        """Raise :class:`index.manifest.SpaceMismatchError` (a ValueError) when ``space_id`` is not this index's."""
        check_space(self.space_id, space_id, what=f"index {self.name!r} ({self.folder})")

    # -- search -----------------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner-product search over all shards.

        Args:
            queries: (n, dim) float32 L2-normalised query vectors.
            k: results per query (>= 1; may exceed ntotal).
            nprobe: lists to probe (IVF only, default the manifest's tuned value; ignored for Flat).

        Returns:
            scores (n, k) float32 cosines, best first, and ids (n, k) int64 global ids; slots without a
            result hold id -1 and score -inf.

        Raises:
            ValueError: queries of the wrong shape or dim, non-finite values, or k / nprobe < 1.
        """
        x = self._check_queries(queries)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r}: must be an integer >= 1")
        k = int(k)
        if self._torch is not None:
            return self._torch.search(x, k)
        params = self._params(nprobe)
        parts = []  # (scores, global ids) of each non-empty shard
        if self._shared is not None and params is not None and len(x):
            # all shards share the trained transform and centroids: assign queries to lists once, not per shard
            transforms, quantizer, ivfs = self._shared
            for vt in transforms:
                x = np.ascontiguousarray(vt.apply(x), dtype=np.float32)
            coarse_dist, coarse_ids = quantizer.search(x, params.nprobe)
            for ivf, offset in zip(ivfs, self._offsets, strict=True):
                if ivf.ntotal:
                    dist, ids = _search_preassigned(
                        ivf, x, min(k, ivf.ntotal), coarse_ids, coarse_dist, params
                    )
                    parts.append((dist, np.where(ids >= 0, ids + offset, -1)))
        else:
            for shard, offset in zip(self._shards, self._offsets, strict=True):
                if shard.ntotal == 0 or len(x) == 0:
                    continue
                dist, ids = shard.search(x, min(k, shard.ntotal), params=params)
                parts.append((dist, np.where(ids >= 0, ids + offset, -1)))
        if len(parts) == 1 and parts[0][1].shape[1] == k:
            # one index answered (e.g. shards merged at load): its top-k is the result as it is; ResultHeap's
            # heapify and reorder are OpenMP loops whose thread wake-ups cost ms on a busy machine
            scores, ids = parts[0]
        else:
            heap = faiss.ResultHeap(len(x), k, keep_max=True)
            for dist, ids in parts:
                heap.add_result(dist, ids)
            heap.finalize()
            scores, ids = heap.D, heap.I
        scores[ids < 0] = -np.inf
        return scores, ids

    def _params(self, nprobe: int | None) -> Any:
        if self.nlist is None:
            return None
        if nprobe is None:
            nprobe = self.manifest.nprobe or max(1, self.nlist // 16)
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
            raise ValueError(f"nprobe={nprobe!r}: must be an integer >= 1 (at most nlist={self.nlist})")
        # passed per call: concurrent searches with different nprobe never interfere
        return faiss.SearchParametersIVF(nprobe=int(min(nprobe, self.nlist)))  # type: ignore[call-arg]

    def _check_queries(self, queries: Any) -> np.ndarray:
        x = np.asarray(queries)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"queries have shape {x.shape}; index {self.name!r} (space {self.space_id!r}) needs "
                f"(n, {self.dim}) float32 vectors: embed them with an encoder of that space"
            )
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"queries have dtype {x.dtype}; pass float32")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError("queries contain NaN or inf values; fix the encoder output")
        return x

    # -- vectors ----------------------------------------------------------------------------------------

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of global ``ids`` ((n,) int), as (n, dim) float32.

        Exact for Flat and IVF-Flat; decoded (approximate) for SQ / PQ codes. IVF shards build their
        direct map (8 bytes per vector) on first use.

        Raises:
            ValueError: an id outside ``[0, ntotal)`` or a shard that cannot reconstruct.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = (ids < 0) | (ids >= self.ntotal)
        if bad.any():
            raise ValueError(
                f"id {int(ids[np.argmax(bad)])} is outside [0, {self.ntotal}) of index {self.name!r}"
            )
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        which = np.searchsorted(self._ends, ids, side="right")
        for s in np.unique(which):
            mask = which == s
            shard = self._shards[s]
            self._ensure_direct_map(shard)
            try:
                out[mask] = shard.reconstruct_batch(ids[mask] - self._offsets[s])
            except RuntimeError as exc:
                raise ValueError(
                    f"index {self.name!r} ({self.manifest.factory}) cannot reconstruct vectors: {exc}"
                ) from exc
        return out

    def _ensure_direct_map(self, shard: Any) -> None:
        try:
            ivf = faiss.extract_index_ivf(shard)
        except (RuntimeError, TypeError):
            return
        with self._lock:
            if ivf.direct_map.type == faiss.DirectMap.NoMap:  # type: ignore[attr-defined]
                ivf.make_direct_map()


def _search_preassigned(
    ivf: Any, x: np.ndarray, k: int, coarse_ids: np.ndarray, coarse_dist: np.ndarray, params: Any
) -> tuple[np.ndarray, np.ndarray]:
    """IndexIVF.search_preassigned with per-call parameters (the Python wrapper refuses ``params``)."""
    n = len(x)
    dist = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    coarse_ids = np.ascontiguousarray(coarse_ids, dtype=np.int64)
    coarse_dist = np.ascontiguousarray(coarse_dist, dtype=np.float32)
    sp = faiss.swig_ptr
    ivf.search_preassigned_c(n, sp(x), k, sp(coarse_ids), sp(coarse_dist), sp(dist), sp(ids), False, params)
    return dist, ids


def _merge_ivf_shards(shards: list[Any], offsets: list[int]) -> Any:
    """One in-memory IVF index holding every shard's lists, ids made global (``merge_from`` adds the offset).

    Shards cloned from one trained index share their centroids, so their lists can be concatenated: one scan
    per probed list instead of one per shard (1.6M x 768, IVF4096, nprobe 336, 2 cores: 0.96x the CPU time of
    one plain index, against 1.19x for 4 separate shards; docs/benchmarks.md). Memory-mapped shards are
    read-only and stay separate.
    """
    merged = shards[0]
    if offsets[0]:
        raise ValueError(f"the first shard starts at id {offsets[0]}, expected 0")
    for shard, offset in zip(shards[1:], offsets[1:], strict=True):
        merged.merge_from(shard, int(offset))  # moves the vectors: the shard object is empty afterwards
    return merged


def _shared_coarse(shards: list[Any]) -> tuple[list[Any], Any, list[Any]] | None:
    """(transforms, quantizer, IVF parts) when every shard is an IVF index with the same pre-transforms and
    coarse centroids (shards cloned from one trained index); None otherwise (then each shard is searched
    on its own)."""
    transforms: list[Any] = []
    quantizer = None
    ivfs = []
    reference: list[np.ndarray] | None = None
    for shard in shards:
        index = faiss.downcast_index(shard)
        chain: list[Any] = []
        if isinstance(index, faiss.IndexPreTransform):
            links: Any = index.chain  # a SWIG vector, not a list
            chain = [faiss.downcast_VectorTransform(links.at(i)) for i in range(links.size())]
            index = faiss.downcast_index(index.index)
        if not isinstance(index, faiss.IndexIVF):
            return None
        q = faiss.downcast_index(index.quantizer)
        if not isinstance(q, faiss.IndexFlat) or any(
            not isinstance(vt, faiss.LinearTransform) for vt in chain
        ):
            return None
        arrays = [q.reconstruct_n(0, q.ntotal)] + [faiss.vector_to_array(vt.A) for vt in chain]
        arrays += [faiss.vector_to_array(vt.b) for vt in chain]
        if reference is None:
            reference, transforms, quantizer = arrays, chain, q
        elif len(arrays) != len(reference) or any(
            not np.array_equal(a, b) for a, b in zip(arrays, reference, strict=True)
        ):
            logger.warning("shards do not share their coarse centroids; each shard assigns queries itself")
            return None
        ivfs.append(index)
    return (transforms, quantizer, ivfs) if ivfs else None


def _is_flat(shard: Any) -> bool:
    return isinstance(faiss.downcast_index(shard), faiss.IndexFlat)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"search device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"search device {device!r}: torch sees no CUDA device here; use auto or cpu")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"search device {device!r}: use auto, cpu, cuda or cuda:N")
    return device


def _choose_backend(backend: str, device: str, shards: list[Any], factory: str) -> str:
    """``faiss``, ``faiss-gpu`` or ``torch:<device>``: see :meth:`ShardedIndex.load`."""
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"search backend {backend!r}: use auto, faiss or torch")
    if backend == "faiss" and device in ("auto", "cpu"):
        return "faiss"
    dev = _resolve_device(device)
    flat = all(_is_flat(s) for s in shards) if shards else factory == "Flat"
    if backend == "torch":
        if not flat:
            raise ValueError(
                f"search backend torch searches Flat databases only, this one is {factory!r}; use backend "
                "faiss (or rebuild the database with --factory Flat)"
            )
        return f"torch:{dev}"
    gpu_faiss = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if dev == "cpu":
        return "faiss"
    if gpu_faiss:
        return "faiss-gpu"
    if backend == "faiss" or not flat:
        logger.warning(
            "search on %s asked for, but this faiss build has no GPU support%s; searching on the CPU",
            dev,
            "" if flat else f" and the torch backend needs a Flat database (this one: {factory})",
        )
        return "faiss"
    return f"torch:{dev}"


def _torch_search_of(shards: list[Any], device: str, dim: int) -> TorchFlatSearch:
    """The Flat shards' vectors, in id order, as one tensor on ``device``."""
    from index.torch_search import TorchFlatSearch

    def parts() -> Iterator[np.ndarray]:
        step = 1 << 18  # rows copied at a time: the host holds at most ~0.8 GB of float32 beside the shards
        for shard in shards:
            for start in range(0, shard.ntotal, step):
                yield shard.reconstruct_n(start, min(step, shard.ntotal - start))

    shape = (sum(int(s.ntotal) for s in shards), dim)
    searcher = TorchFlatSearch.from_arrays(parts(), shape, device)
    logger.info(
        "torch search on %s: %d x %d %s vectors resident",
        device,
        searcher.ntotal,
        searcher.dim,
        searcher.dtype,
    )
    return searcher


def _to_gpus(shards: list[Any], fp16: bool) -> tuple[list[Any], bool]:
    """Copy shards to all GPUs (each shard's data split over them); CPU-only faiss keeps them as they are."""
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if n_gpus == 0:
        logger.warning("gpu=True but this faiss build sees no GPU; searching on the CPU")
        return shards, False
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = fp16
    options.shard = n_gpus > 1
    moved = [faiss.index_cpu_to_all_gpus(s, co=options) for s in shards]
    logger.info("copied %d shards to %d GPU(s) (fp16=%s)", len(shards), n_gpus, fp16)
    return moved, True
