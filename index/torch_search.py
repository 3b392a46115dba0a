"""Exact inner-product search with torch: the Flat shards' vectors resident on a device, matrix product + top-k.

Why: the design puts search on GPU workers, but faiss's GPU build is one CUDA-version-specific wheel (CUDA 12,
~135 MB) that many GPU machines cannot install; torch is there already. A matrix product + ``topk`` over fp16
vectors is what faiss-GPU's Flat search does too, so nothing is lost for exact (Flat) databases.

With float32 vectors the results are faiss ``IndexFlatIP``'s, id for id, wherever scores differ (fp16 vectors,
the CUDA default, move scores by ~1e-3 and can swap near-ties). Equal scores are ordered by id, lowest first,
and at the k-th place the lowest ids are kept: a stable sort's rule. faiss has no such rule (its choice among
equal scores follows its heap's history: on exactly tied data it kept the lowest ids in about half the cases),
so equal scores are the one place the two may list different ids. Slots past the database's size hold id -1
and score -inf, as in faiss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["TorchFlatSearch", "SCORE_BUDGET_BYTES"]

# Bytes of one (queries x rows) score block. The 1.6M x 1,024 fp16 block of the GPU bench is 3.3 GB; blocks of
# 1 GiB keep the same speed there (docs/benchmarks.md) while a small card or the CPU stays within memory.
SCORE_BUDGET_BYTES = {"cuda": 1 << 30, "cpu": 64 << 20}


class TorchFlatSearch:
    """All vectors of a database as one (n, dim) tensor; rows are the global ids.

    Args:
        vectors: (n, dim) tensor, L2-normalised rows, already on its device and in its dtype (float16 on CUDA,
            float32 on the CPU: CPU matrix products in fp16 are slow and inexact).
        score_budget_bytes: size of one (queries, rows) score block (default by device, ``SCORE_BUDGET_BYTES``).
    """

    def __init__(self, vectors: torch.Tensor, score_budget_bytes: int | None = None) -> None:
        if vectors.ndim != 2:
            raise ValueError(f"vectors have shape {tuple(vectors.shape)}; expected (n, dim)")
        self.vectors = vectors
        self.device = vectors.device
        self.dtype = vectors.dtype
        self.budget = score_budget_bytes or SCORE_BUDGET_BYTES.get(self.device.type, 1 << 30)

    @classmethod
    def from_arrays(
        cls,
        parts: Iterable[np.ndarray],
        shape: tuple[int, int],
        device: str | torch.device,
        dtype: torch.dtype | None = None,
        score_budget_bytes: int | None = None,
    ) -> TorchFlatSearch:
        """Copy (n_i, dim) float32 arrays (the shards in id order, n_i summing to ``shape[0]``) into one tensor.

        ``dtype`` defaults to float16 on CUDA and float32 elsewhere. The tensor is allocated once on the device
        and filled part by part, so neither side ever holds a second copy of the whole.
        """
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        vectors = torch.empty(shape, dtype=dtype, device=device)
        filled = 0
        for part in parts:
            block = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
            if filled + len(block) > shape[0] or block.shape[1:] != (shape[1],):
                raise ValueError(f"parts of shape {tuple(block.shape)} overflow the declared {shape}")
            vectors[filled : filled + len(block)] = block.to(device, dtype)
            filled += len(block)
        if filled != shape[0]:
            raise ValueError(f"parts hold {filled} rows, {shape[0]} declared")
        return cls(vectors, score_budget_bytes)

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products.

        Args:
            queries: (m, dim) float32.
            k: results per query (>= 1; may exceed ntotal).

        Returns:
            scores (m, k) float32, best first, and ids (m, k) int64 (rows of ``vectors``); -inf / -1 past ntotal.
        """
        m, n = len(queries), self.ntotal
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        ids = np.full((m, k), -1, dtype=np.int64)
        if m == 0 or n == 0:
            return scores, ids
        kk = min(k, n)
        q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        if self.device.type == "cuda" and q_all.nbytes >= 1 << 20:  # pinning costs more than it saves below
            q_all = q_all.pin_memory()
        item = self.vectors.element_size()
        # rows per block, then queries per block, so that a block of scores fits the budget
        rows = max(kk, min(n, self.budget // (item * min(m, 256))))
        per_q = max(1, min(m, self.budget // (item * rows)))
        for q0 in range(0, m, per_q):
            q = q_all[q0 : q0 + per_q].to(self.device, self.dtype, non_blocking=True)
            best_s, best_i = self._search_block(q, kk, rows)
            scores[q0 : q0 + len(q), :kk] = best_s
            ids[q0 : q0 + len(q), :kk] = best_i
        return scores, ids

    def _search_block(self, q: torch.Tensor, k: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """One query block against every row block; the running best kept sorted (score desc, id asc)."""
        best_s: torch.Tensor | None = None
        best_i: torch.Tensor | None = None
        for r0 in range(0, self.ntotal, rows):
            block = self.vectors[r0 : r0 + rows]
            s = q @ block.T  # (q, r) in the storage dtype
            top_s, top_i = _top_lowest_ids(s, min(k, len(block)))
            top_i = top_i + r0
            if best_s is None or best_i is None:
                best_s, best_i = top_s, top_i
                continue
            # the running best holds only lower ids than this block: a stable sort keeps lower ids first on ties
            cat_s, cat_i = torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i], 1)
            order = torch.sort(cat_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_i = cat_s.gather(1, order), cat_i.gather(1, order)
        assert best_s is not None and best_i is not None
        return best_s.float().cpu().numpy(), best_i.cpu().numpy()


def _top_lowest_ids(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of ``s`` (q, r), ties at the k-th place broken towards the lowest column, sorted by
    (score desc, column asc). ``topk`` alone picks tied columns arbitrarily; rows with surplus ties (rare with
    float32, more common in fp16) are redone with a stable full sort."""
    vals, cols = torch.topk(s, k, dim=1)
    surplus = (s >= vals[:, -1:]).sum(1) > k
    if bool(surplus.any()):
        rows = surplus.nonzero().squeeze(1)
        fixed = torch.sort(s[rows], dim=1, descending=True, stable=True).indices[:, :k]
        cols[rows] = fixed
        vals[rows] = s[rows].gather(1, fixed)
    # (score desc, column asc): sort by column, then a stable sort by score
    by_col = torch.sort(cols, dim=1).indices
    vals, cols = vals.gather(1, by_col), cols.gather(1, by_col)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, order), cols.gather(1, order)
