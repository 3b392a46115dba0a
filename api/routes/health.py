"""``GET /healthz`` (the process is up) and ``GET /readyz`` (models and databases loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StateDep
from api.schemas import Health, Readiness, SpeechModelInfo
from api.state import speech_model_info

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: answers as soon as the process serves HTTP, even while models load."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: 200 once models and databases are loaded (with the speech model's kind), 503 while loading
    or after a failed load."""
    if state.services is not None:
        info = SpeechModelInfo(**speech_model_info(state.services.models.speech))
        return JSONResponse(Readiness(status="ready", speech_model=info).model_dump())
    body = Readiness(status="failed" if state.error else "loading", detail=state.error)
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
