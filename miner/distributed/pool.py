"""The driver side of a stage: actor pools sized to the cluster, a roster of live actors, and the run."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from miner.distributed.blocks import is_done
from miner.distributed.session import RayOptions, import_ray
from miner.distributed.workers import BlockWorker

log = logging.getLogger(__name__)


def _pool(ray: Any, opts: RayOptions, n_blocks: int) -> tuple[int, float]:
    """(actors, GPUs per actor) for a stage: one GPU each when the cluster has GPUs, never more than fit."""
    resources = ray.cluster_resources()
    gpus = opts.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    fit = int(resources.get("GPU", 0) // gpus) if gpus > 0 else int(resources.get("CPU", 1))
    workers = max(1, min(opts.workers, fit, n_blocks))
    if workers < min(opts.workers, n_blocks):
        log.warning(
            "asked for %d Ray workers but the cluster fits %d (%s): using %d",
            opts.workers,
            fit,
            resources,
            workers,
        )
    return workers, gpus


class _Roster:
    """A Ray actor (0 CPUs) that keeps the handles of one stage's pool actors, which sign in as they start."""

    def __init__(self) -> None:
        self.actors: list[Any] = []

    def add(self, actor: Any) -> None:
        self.actors.append(actor)

    def all(self) -> list[Any]:
        return self.actors


@contextmanager
def _roster(ray: Any) -> Iterator[Any]:
    """A :class:`_Roster` for one stage; on exit every actor that signed in is killed, then the roster.

    Ray Data (2.60) ends a pool by dropping its references to the actors. After a task error, the failed and
    in-flight tasks' callbacks still hold actor handles, in reference cycles that the error's traceback keeps
    reachable for as long as anything keeps the error (pytest's log capture and IPython's last exception
    do): the actors stay alive, idle, holding their CPUs, and the next pool in the same Ray session (a rerun,
    a test, a notebook) waits forever for them. Killing them by handle does not depend on any of that.
    """
    roster = ray.remote(num_cpus=0)(_Roster).remote()
    try:
        yield roster
    finally:
        try:
            actors = ray.get(roster.all.remote(), timeout=60)
        except Exception as exc:  # a dead roster: its actors' handles went with it
            log.warning("could not list this stage's Ray actors to stop them: %s", exc)
            actors = []
        for actor in actors:
            ray.kill(actor)
        ray.kill(roster)  # an actor still starting fails to sign in and exits


def run_blocks(
    worker: type[BlockWorker],
    work: Path,
    stage: dict[str, Any],
    rows: list[dict[str, Any]],
    opts: RayOptions,
    what: str,
    **worker_kwargs: Any,
) -> list[dict[str, Any]]:
    """Run block descriptors ``rows`` through an actor pool of ``worker`` (inside :func:`ray_session`).

    Each descriptor is its own Ray block, so idle actors pull the next one (streaming, nothing bulky goes
    through the object store: actors read and write the work folder). The actors are stopped when it
    returns or raises (see :func:`_roster`).

    Returns:
        One dict per block: ``block``, ``items``, ``attempts``, ``seconds``.

    Raises:
        RuntimeError: a block still failed after its retries, or the pool did not start within
            ``opts.start_timeout``; finished blocks are kept for the rerun.
    """
    if not rows:
        return []
    ray = import_ray()
    workers, gpus = _pool(ray, opts, len(rows))
    t0 = time.perf_counter()
    with _roster(ray) as roster:
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            worker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=gpus,
            fn_constructor_kwargs={
                "work": str(work),
                "stage": stage,
                "retries": opts.retries,
                "fail_once": opts.fail_once,
                "roster": roster,
                **worker_kwargs,
            },
        )
        # This dataset's own context: start() waits for the whole pool, then raises rather than hang.
        ds.context.wait_for_min_actors_s = max(1, math.ceil(opts.start_timeout))
        try:
            results = [
                {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in ds.iter_rows()
            ]
        except ray.exceptions.GetTimeoutError as exc:
            raise RuntimeError(
                f"{what}: {workers} Ray workers ({gpus:g} GPUs and 1 CPU each) did not all start within "
                f"{opts.start_timeout:g} s; free: {ray.available_resources()}, cluster: "
                f"{ray.cluster_resources()}. Free the cluster, lower --workers or raise "
                "RayOptions.start_timeout, then run the same command again"
            ) from exc
        except Exception as exc:
            raise RuntimeError(
                f"{what}: the Ray job failed ({exc}); finished blocks are kept under {work}: run the same "
                "command again to resume"
            ) from exc
    seconds = time.perf_counter() - t0
    items = sum(int(r["items"]) for r in results)
    retried = [int(r["block"]) for r in results if int(r["attempts"]) > 1]
    log.info(
        "%s: %d blocks, %d items in %.1f s (%.1f items/s) with %d Ray workers%s",
        what,
        len(results),
        items,
        seconds,
        items / max(seconds, 1e-9),
        workers,
        f"; blocks retried: {retried}" if retried else "",
    )
    return sorted(results, key=lambda r: int(r["block"]))


def remove_work(work: Path) -> None:
    """Delete a finished job's work folder, and its parent when that is left empty (``.ray-work``)."""
    shutil.rmtree(work, ignore_errors=True)
    with suppress(OSError):  # other jobs' folders are still there
        work.parent.rmdir()


def check_all_done(work: Path, n_blocks: int, what: str) -> None:
    missing = [b for b in range(n_blocks) if not is_done(work, b)]
    if missing:
        raise RuntimeError(
            f"{what}: blocks {missing[:5]} have no completion marker under {work}; run the command again"
        )
