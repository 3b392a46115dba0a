"""Benchmark exact search on a torch device: ``index.torch_search.TorchFlatSearch`` against the plain torch
reference (one fp16 matrix product + ``topk`` over the whole database) in the same run, same data.

    python bench/bench_search_gpu.py --n 1600000 --dim 768 --out search.json      # on a GPU
    python bench/bench_search_gpu.py --n 20000 --device cpu                      # a CPU smoke run

Both sides start from float32 numpy queries and end with numpy scores and ids on the host, as the API does;
the reference's on-device time alone is reported beside it. One untimed call each, then ``--repeat``
interleaved rounds, best of. ``ids_equal`` compares the two sides' ids (fp16 near-ties may swap).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.torch_search import TorchFlatSearch  # noqa: E402


def random_unit(n: int, dim: int, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(n, dim) random L2-normalised rows made on the device in chunks (no host copy of the database)."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(n, dim, dtype=dtype, device=device)
    step = 1 << 18
    for s in range(0, n, step):
        x = torch.randn(min(step, n - s), dim, generator=g, device=device)
        out[s : s + len(x)] = torch.nn.functional.normalize(x, dim=1).to(dtype)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_600_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", default="1,32,1024")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    db = random_unit(args.n, args.dim, device, dtype, seed=0)
    sync(device)
    searcher = TorchFlatSearch(db)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "n": args.n, "dim": args.dim, "k": args.k, "dtype": str(dtype), "setup_s": time.perf_counter() - t0,
        "score_budget_bytes": searcher.budget, "runs": [],
    }  # fmt: skip

    for nq in (int(q) for q in args.queries.split(",")):
        q_np = random_unit(nq, args.dim, device, torch.float32, seed=nq).cpu().numpy()

        def ours(q_np: np.ndarray = q_np) -> tuple[np.ndarray, np.ndarray]:
            return searcher.search(q_np, args.k)

        def reference(q_np: np.ndarray = q_np) -> tuple[np.ndarray, np.ndarray]:
            q = torch.from_numpy(q_np).to(device, dtype)
            s, i = torch.topk(q @ db.T, args.k, dim=1)
            return s.float().cpu().numpy(), i.cpu().numpy()

        def reference_on_device(q_dev: torch.Tensor = torch.from_numpy(q_np).to(device, dtype)) -> None:
            torch.topk(q_dev @ db.T, args.k, dim=1)
            sync(device)

        times: dict[str, list[float]] = {"ours": [], "reference": [], "reference_on_device": []}
        fns = {"ours": ours, "reference": reference, "reference_on_device": reference_on_device}
        outs = {name: fn() for name, fn in fns.items()}  # untimed: kernel choice, allocator growth
        for _ in range(args.repeat):
            for name, fn in fns.items():
                sync(device)
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        (s_ours, i_ours), (s_ref, i_ref) = outs["ours"], outs["reference"]
        best = {name: min(v) for name, v in times.items()}
        run = {
            "queries": nq,
            "ours_ms": best["ours"] * 1e3,
            "reference_ms": best["reference"] * 1e3,
            "reference_on_device_ms": best["reference_on_device"] * 1e3,
            "ours_over_reference": best["ours"] / best["reference"],
            "ours_over_reference_on_device": best["ours"] / best["reference_on_device"],
            "queries_per_s": nq / best["ours"],
            "ids_equal": float((i_ours == i_ref).mean()),
            "max_score_diff": float(np.abs(s_ours - s_ref).max()),
        }
        results["runs"].append(run)
        print(
            f"{nq:>6} queries: ours {run['ours_ms']:8.2f} ms  reference {run['reference_ms']:8.2f} ms "
            f"(on device {run['reference_on_device_ms']:8.2f})  ratio {run['ours_over_reference']:.2f}  "
            f"{run['queries_per_s']:,.0f} q/s  ids equal {run['ids_equal']:.4f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
