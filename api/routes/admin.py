"""``GET /indexes``: the databases this server answers from."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import ServicesDep, require_api_key
from api.routes.common import ERRORS
from api.schemas import IndexInfo

router = APIRouter(tags=["admin"], dependencies=[Depends(require_api_key)], responses=ERRORS)


@router.get("/indexes", response_model=list[IndexInfo])
async def list_indexes(services: ServicesDep) -> list[IndexInfo]:
    """Name, kind, size, dim and space of every served database, by name."""
    return [
        IndexInfo(
            name=db.name,
            kind=db.kind,
            size=db.size,
            dim=db.dim,
            space_id=db.space_id,
            margins=db.margins is not None,
        )
        for db in sorted(services.databases.values(), key=lambda d: d.name)
    ]
