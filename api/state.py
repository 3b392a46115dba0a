"""What the server holds once started: encoders, databases and batchers, loaded once in the app's lifespan.

Start-up has two steps. :meth:`ServiceState.start` first runs a cheap pre-flight (model config and database
manifests only) and raises at once on a bad configuration, e.g. a named database in another embedding space
than the model, so the server refuses to start with one clear log line. The heavy loading (model weights,
faiss shards) then runs in a worker thread, in the background by default: ``/healthz`` answers at once and
``/readyz`` says 503 until everything is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from api.batching import MicroBatcher
from api.metrics import Metrics
from api.settings import Settings
from miner.databases import (
    Database,
    DatabasePlan,
    UnknownDatabase,
    WrongDatabaseKind,
    check_database_space,
    open_database,
    plan_databases,
)
from miner.spaces import SpaceMismatchError, check_same_space

__all__ = ["Models", "NotReady", "ServiceState", "Services", "check_home", "load_models"]

log = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """The models or databases are still loading (or failed to load)."""

    retry_after = 5.0


@dataclass
class Models:
    """The two encoders of one embedding space."""

    speech: Any  # a speech model of any kind (miner.encoders.speech_spec.SpeechModel; torch loads lazily)
    text: Any  # miner.encoders.text.TextEncoder
    space_id: str
    dim: int


@dataclass
class Services:
    """Everything a request needs, ready to use."""

    models: Models
    databases: dict[str, Database]
    speech_batcher: MicroBatcher[np.ndarray]
    text_batcher: MicroBatcher[str]
    loaded_at: float = field(default_factory=time.time)

    def database(self, name: str, kind: str) -> Database:
        """The served database ``name``, which must be of ``kind`` ("text" or "speech").

        Raises:
            UnknownDatabase: no database of that name is served.
            WrongDatabaseKind: it exists but holds the other kind.
        """
        db = self.databases.get(name)
        if db is None:
            have = ", ".join(f"{d.name} ({d.kind})" for d in self.databases.values()) or "none"
            raise UnknownDatabase(f"unknown database {name!r}; this server serves: {have} (see GET /indexes)")
        if db.kind != kind:
            raise WrongDatabaseKind(
                f"database {name!r} holds {db.kind} but this endpoint searches {kind}: pick a {kind} database "
                "(see GET /indexes)"
            )
        return db


def load_models(settings: Settings) -> Models:
    """Load the speech encoder and its text encoder (blocking; run it in a thread).

    Raises:
        SpaceMismatchError: ``settings.text_model`` is not in the speech model's space.
    """
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder, load_text_encoder_for

    start = time.perf_counter()
    speech = load_speech_encoder(settings.speech_model, device=settings.device)
    if settings.text_model:
        text = load_text_encoder(settings.text_model, device=settings.device)
    else:
        text = load_text_encoder_for(speech, device=settings.device)
    check_same_space(
        speech.space_id,
        text.space_id,
        f"speech model {speech.model_id}",
        f"text model {text.model_id}",
        speech.dim,
        text.dim,
    )
    log.info(
        "loaded %s speech model %s and text model %s (space %s, dim %d) in %.1f s",
        speech.kind,
        speech.model_id,
        text.model_id,
        speech.space_id,
        speech.dim,
        time.perf_counter() - start,
    )
    return Models(speech=speech, text=text, space_id=speech.space_id, dim=speech.dim)


def _local_model_space(speech_model: str | None) -> tuple[str, int] | None:
    """(space id, dim) of the speech model string from its SAMU folder's config.json (every kind lives in its
    SAMU model's space) without loading weights; None if unknown."""
    from miner.encoders.speech_spec import spec_space

    return spec_space(speech_model)


def speech_model_info(speech: Any) -> dict[str, Any]:
    """What ``/readyz`` shows of the loaded speech model: kind, model id, space, dim, fusion weight."""
    return {
        "kind": str(getattr(speech, "kind", "samu")),
        "model_id": str(speech.model_id),
        "space_id": str(speech.space_id),
        "dim": int(speech.dim),
        "fusion_weight": getattr(speech, "weight", None),
    }


class ServiceState:
    """The server's life cycle: pre-flight, loading, ready (or failed), shut down.

    Args:
        settings: the configuration.
        metrics: where batchers report.
    """

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.services: Services | None = None
        self.status = "starting"
        self.error: str | None = None
        self._plans: list[DatabasePlan] = []
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    # -- requests -----------------------------------------------------------------------------------------
    def require(self) -> Services:
        """The loaded services, or :class:`NotReady` while loading / after a failed load."""
        if self.services is None:
            detail = (
                f"loading failed: {self.error}" if self.error else "models and databases are still loading"
            )
            raise NotReady(f"the server is not ready ({detail}); retry shortly or check GET /readyz")
        return self.services

    # -- life cycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Pre-flight (raises on bad configuration), then load in the background or in place.

        Raises:
            SpaceMismatchError, FileNotFoundError, IndexFormatError, ...: the server must not start.
        """
        settings = self.settings
        self.loaded = asyncio.Event()
        try:
            check_home(settings.home)
            known = _local_model_space(settings.speech_model)
            self._plans = plan_databases(settings.home, settings.databases, *(known or (None, None)))
        except Exception as exc:
            log.error("refusing to start: %s", exc)
            raise
        self.status = "loading"
        if settings.load_in_background:
            self._task = asyncio.get_running_loop().create_task(self._load(), name="load-models")
            return
        await self._load()
        if self.error is not None:
            raise RuntimeError(f"refusing to start: {self.error}")

    async def _load(self) -> None:
        try:
            models = await asyncio.to_thread(load_models, self.settings)
            databases = await asyncio.to_thread(self._open_databases, models)
            self.services = self._serve(models, databases)
            self.status = "ready"
            self.metrics.ready.set(1)
            log.info("ready: %d database(s): %s", len(databases), ", ".join(databases) or "none")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.status = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("loading failed, the server stays unready: %s", exc)
        finally:
            self.loaded.set()

    def _open_databases(self, models: Models) -> dict[str, Database]:
        explicit = bool(self.settings.databases)
        out: dict[str, Database] = {}
        try:
            for plan in self._plans:
                try:
                    check_database_space(plan, models.space_id, models.dim)
                except SpaceMismatchError as exc:
                    if explicit:
                        raise
                    log.warning("skipping database %s: %s", plan.name, exc)
                    continue
                out[plan.name] = open_database(plan.folder, plan.name, load=self.settings.index_load)
        except BaseException:
            for db in out.values():
                db.close()
            raise
        return out

    def _serve(self, models: Models, databases: dict[str, Database]) -> Services:
        s = self.settings
        speech_model, text_model = models.speech, models.text

        def encode_speech(wavs: Sequence[np.ndarray]) -> np.ndarray:
            return speech_model.encode(list(wavs), batch_size=s.batch_size)

        def encode_text(texts: Sequence[str]) -> np.ndarray:
            return text_model.encode(list(texts), batch_size=s.batch_size)

        batchers: dict[str, MicroBatcher[Any]] = {}
        for name, fn in (("speech", encode_speech), ("text", encode_text)):
            batcher: MicroBatcher[Any] = MicroBatcher(
                name,
                fn,
                batch_size=s.batch_size,
                max_wait_ms=s.batch_wait_ms,
                queue_size=s.queue_size,
                on_batch=self.metrics.batch_observer(name),
                max_queue_wait_s=s.max_queue_wait_s,
            )
            batcher.start()
            self.metrics.track_depth(name, _depth_of(batcher))
            self.metrics.track_admission(name, batcher)
            batchers[name] = batcher
        return Services(models, databases, batchers["speech"], batchers["text"])

    async def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait until loading ended (ready or failed); True when ready."""
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), timeout)
        return self.services is not None

    async def stop(self) -> None:
        """Cancel a load in progress, stop the batchers, close the stores."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        services, self.services = self.services, None
        self.status = "stopped"
        self.metrics.ready.set(0)
        if services is None:
            return
        await services.speech_batcher.aclose()
        await services.text_batcher.aclose()
        for db in services.databases.values():
            db.close()


def check_home(home: Path) -> None:
    """Refuse a data root that is not a folder: a typo in MINER_HOME would otherwise serve zero databases.

    Raises:
        FileNotFoundError: ``home`` does not exist, or is not a folder.
    """
    if not home.is_dir():
        what = "is not a folder" if home.exists() else "does not exist"
        raise FileNotFoundError(
            f"the data root {str(home)!r} {what} (MINER_HOME / --home, resolved from {Path.cwd()}): point it at "
            "the folder that holds the databases (build one with `miner index build`)"
        )


def _depth_of(batcher: MicroBatcher[Any]) -> Callable[[], int]:
    return lambda: batcher.depth
