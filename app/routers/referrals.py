"""JSON referral intake and tracking."""

from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import AwareDatetime

from app.auth.deps import PatientDataReader, Referrer
from app.core.config import settings
from app.db.session import SessionDep
from app.models.enums import ReferralStatus, Service
from app.models.referral import ReferralCreate, ReferralCreated, ReferralPublic, ReferralsPublic
from app.routers.deps import VisibleReferral
from app.routers.examples import BP_REFERRAL, DMS_REFERRAL, JSON_REFERRAL, error_responses
from app.services import referrals as referral_service

router = APIRouter(prefix="/api/v1/referrals", tags=["referrals"])

_CREATE_EXAMPLES = {
    "pharmacy-first": {"summary": "Pharmacy First, sore throat pathway", "value": JSON_REFERRAL},
    "blood-pressure": {"summary": "Blood pressure check with ABPM", "value": BP_REFERRAL},
    "dms": {"summary": "Discharge Medicines Service (trusts only)", "value": DMS_REFERRAL},
}


@router.post(
    "",
    response_model=ReferralCreated,
    status_code=201,
    responses={
        200: {
            "model": ReferralCreated,
            "description": "Replay of an earlier request with the same Idempotency-Key",
        },
        **error_responses(401, 403, 409, 413, 422),
    },
)
def create_referral(
    session: SessionDep,
    user: Referrer,
    referral_in: Annotated[ReferralCreate, Body(openapi_examples=_CREATE_EXAMPLES)],
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Repeat a request safely: the same key returns the original referral.",
        ),
    ] = None,
) -> ReferralCreated:
    """Make a referral to a community pharmacy service (JSON, for systems without FHIR)."""
    result = referral_service.create_referral_from_json(
        session=session, referral_in=referral_in, caller=user, idempotency_key=idempotency_key
    )
    if not result.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    public = referral_service.to_public(result.referral)
    return ReferralCreated(**public.model_dump(), warnings=[])


@router.get("", response_model=ReferralsPublic, responses=error_responses(400, 401, 403, 422))
def read_referrals(
    session: SessionDep,
    user: PatientDataReader,
    status: ReferralStatus | None = None,
    service: Service | None = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Only referrals made at or after this instant")
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor from the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=settings.page_size_max)] = settings.page_size_default,
) -> ReferralsPublic:
    """List the referrals the caller may see, newest first, with cursor paging."""
    filters = referral_service.ReferralFilter(status=status, service=service, created_since=since)
    page, next_cursor = referral_service.list_referrals(
        session=session, caller=user, filters=filters, cursor=cursor, limit=limit
    )
    return ReferralsPublic(
        data=[referral_service.to_public(r) for r in page], next_cursor=next_cursor
    )


@router.get(
    "/{referral_id}", response_model=ReferralPublic, responses=error_responses(401, 403, 404)
)
def read_referral(referral: VisibleReferral) -> ReferralPublic:
    """Get one referral the caller may see (another organisation's referral reads as 404)."""
    return referral_service.to_public(referral)
