"""Shared router dependencies: loaders that 404 for what the caller may not see."""

from typing import Annotated

from fastapi import Depends, Path, Request

from app.auth.deps import PatientDataReader
from app.core.errors import BadRequest, Issue
from app.db.session import SessionDep
from app.models.referral import Referral
from app.services import referrals as referral_service


def get_visible_referral(
    session: SessionDep,
    user: PatientDataReader,
    referral_id: Annotated[str, Path(description="The referral id (UUID) returned at intake.")],
) -> Referral:
    return referral_service.get_visible_referral(
        session=session, referral_id=referral_id, caller=user
    )


VisibleReferral = Annotated[Referral, Depends(get_visible_referral)]


async def read_raw_body(request: Request) -> bytes:
    """The request body as sent: FHIR intake parses it once and stores it verbatim."""
    return await request.body()


RawBody = Annotated[bytes, Depends(read_raw_body)]


def expected_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version an update is based on: from `If-Match: W/"3"` (or "3"), else the body's field."""
    if if_match is None:
        return body_version
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise BadRequest(
            'If-Match must be the referral\'s ETag, e.g. W/"3".',
            issues=[Issue("invalid", "Malformed If-Match header.", "If-Match")],
        )
    return int(tag)


def etag(version: int) -> str:
    return f'W/"{version}"'
