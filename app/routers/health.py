"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from app.db import migrations
from app.db.session import engine
from app.routers import errors

router = APIRouter(tags=["health"])


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok"}})

    status: str


@router.get("/healthz", response_model=Health)
async def read_health() -> Health:
    """The process is up."""
    # async: no I/O, so no worker-thread hand-off (each costs more than this whole answer).
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def read_readiness() -> JSONResponse:
    """The database is reachable and its schema is at the latest migration."""
    if migrations.serves_this_release(engine):
        return JSONResponse({"status": "ok"})
    return JSONResponse(
        {"status": "unavailable"},
        status_code=503,
        headers={"Retry-After": str(errors.RETRY_AFTER_SECONDS)},
    )
