"""The directory of organisations (JSON)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.auth.deps import CurrentUser
from app.core.config import settings
from app.db.base import utc_now
from app.db.session import SessionDep
from app.models.enums import OrgKind, Service
from app.models.organisation import OrganisationPublic, OrganisationsPublic
from app.routers.examples import error_responses
from app.services import organisations as organisation_service

router = APIRouter(prefix="/api/v1/organisations", tags=["directory"])


@router.get("", response_model=OrganisationsPublic, responses=error_responses(401, 422))
def read_organisations(
    session: SessionDep,
    _user: CurrentUser,
    kind: OrgKind | None = None,
    service: Annotated[
        Service | None, Query(description="Pharmacies registered for this service")
    ] = None,
    pcn: Annotated[
        str | None,
        Query(max_length=10, pattern="^[A-Za-z0-9]+$", description="Members of this PCN today"),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=10,
            pattern="^[A-Za-z0-9]*$",
            description="next_cursor from the previous page",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=settings.page_size_max)] = settings.page_size_default,
) -> OrganisationsPublic:
    """List directory organisations by ODS code, filtered by kind, service or PCN."""
    return organisation_service.list_organisations(
        session=session,
        kind=kind,
        service=service,
        pcn=pcn,
        after=cursor,
        limit=limit,
        on=utc_now().date(),
    )


@router.get("/{ods}", response_model=OrganisationPublic, responses=error_responses(401, 404))
def read_organisation(
    session: SessionDep,
    _user: CurrentUser,
    ods: Annotated[str, Path(max_length=10, description="ODS code")],
) -> OrganisationPublic:
    """Get one organisation with its PCN or place, list size and registered services."""
    organisation = organisation_service.get_organisation_or_raise(session=session, ods_code=ods)
    return organisation_service.to_public(
        session=session, organisation=organisation, on=utc_now().date()
    )
