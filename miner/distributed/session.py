"""Connecting to Ray: engine names, :class:`RayOptions` and the session a job runs in."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


ENGINES = ("local", "ray")

_FORWARDED_ENV = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "MINER_SPEECH_MODEL",
    "MINER_TEXT_MODEL",
)


def check_engine(engine: str) -> str:
    """Return ``engine`` if it is ``local`` or ``ray``, else raise ValueError naming the choices."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    return engine


@dataclass
class RayOptions:
    """How to run on Ray.

    Attributes:
        address: cluster address (``ray://host:10001`` or ``host:6379``); ``None``: ``$RAY_ADDRESS`` or a local
            Ray started for the job and stopped after it.
        workers: actors per stage (each loads the model once); capped by the cluster's GPUs (or CPUs).
        gpus_per_worker: GPUs per actor; ``None``: 1 when the cluster has GPUs, else 0 (one CPU per actor).
        block_size: items per block (``None``: sentences 8192, audio files 16, query rows 4096).
        retries: extra attempts of a block that raises, inside its actor.
        progress: show Ray Data's progress bars.
        fail_once: testing hook: a flag file; the first block to reach its fault point creates it and raises
            once (after writing its outputs, before its marker: the worst moment).
        start_timeout: seconds to wait for all of a stage's actors to start (model load included) before
            the job fails with an error naming the cluster's free resources.
    """

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float | None = None
    block_size: int | None = None
    retries: int = 2
    progress: bool = False
    fail_once: str | None = None
    start_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: need at least 1 Ray worker")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size={self.block_size}: must be >= 1")
        if self.retries < 0:
            raise ValueError(f"retries={self.retries}: must be >= 0")
        if not self.start_timeout > 0:
            raise ValueError(f"start_timeout={self.start_timeout}: must be > 0 seconds")


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the engine needs Ray Data, not only core Ray)
    except ImportError as exc:
        raise ImportError(
            "--engine ray needs Ray Data: pip install 'samu-miner[ray]' (or pip install 'ray[data]')"
        ) from exc
    return ray


@contextmanager
def ray_session(opts: RayOptions) -> Iterator[Any]:
    """Connect to (or start) Ray for the duration of a job; a Ray started here is shut down afterwards.

    An already initialised Ray (e.g. started by a test or a notebook) is used as it is and left running.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
        ray.init(
            address=opts.address,
            include_dashboard=False,
            runtime_env={"env_vars": env} if env else None,
        )
        started = True
        log.info("Ray: %s", ray.cluster_resources())
    with warnings.catch_warnings():  # Ray Data's own deprecated fields warn on first access
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current().enable_progress_bars = opts.progress
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
