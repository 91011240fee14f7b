"""The audit of reads of patient data, for administrators."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from app.auth.deps import require_role
from app.core.config import settings
from app.db.session import SessionDep
from app.models.audit import ReadAuditsPublic
from app.models.enums import Role
from app.models.user import User
from app.routers.examples import error_responses
from app.services import audit as audit_service

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

Admin = Annotated[User, Depends(require_role(Role.ADMIN))]


@router.get(
    "/reads", response_model=ReadAuditsPublic, responses=error_responses(400, 401, 403, 422)
)
def read_read_audit(
    session: SessionDep,
    _admin: Admin,
    referral: Annotated[
        uuid.UUID | None, Query(description="Only reads that disclosed this referral")
    ] = None,
    org: Annotated[
        str | None, Query(max_length=10, description="Only reads by this organisation (ODS code)")
    ] = None,
    user: Annotated[
        str | None, Query(max_length=200, description="Only reads by this token subject")
    ] = None,
    from_: Annotated[
        AwareDatetime | None, Query(alias="from", description="Reads at or after this instant")
    ] = None,
    to: Annotated[AwareDatetime | None, Query(description="Reads before this instant")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor from the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=settings.page_size_max)] = settings.page_size_default,
) -> ReadAuditsPublic:
    """Who read which referrals' patient data, when and through which route, newest first."""
    filters = audit_service.ReadFilter(
        referral_id=referral,
        org=org.upper() if org else None,
        subject=user,
        at_from=from_,
        at_to=to,
    )
    data, next_cursor = audit_service.list_reads(
        session=session, filters=filters, cursor=cursor, limit=limit
    )
    return ReadAuditsPublic(data=data, next_cursor=next_cursor)
