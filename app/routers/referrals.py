"""JSON referral intake and tracking."""

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Response

from app.auth.deps import PatientDataReader, Pharmacy, Referrer
from app.core.config import settings
from app.db.session import SessionDep
from app.models.enums import DueState, ReferralStatus, Service
from app.models.event import ReferralHistory
from app.models.referral import (
    ActionIn,
    DeclineIn,
    ForwardedPublic,
    ForwardIn,
    NoContactIn,
    ReasonIn,
    Referral,
    ReferralCreate,
    ReferralCreated,
    ReferralPublic,
    ReferralsPublic,
)
from app.models.types import IsoDateTime
from app.routers.deps import (
    AuditedReferral,
    ReadAudit,
    ReferralToChange,
    etag,
    expected_version,
    model_response,
)
from app.routers.examples import BP_REFERRAL, DMS_REFERRAL, JSON_REFERRAL, error_responses
from app.services import lifecycle
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
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Repeat a request safely: the same key returns the original referral.",
        ),
    ] = None,
) -> Response:
    """Make a referral to a community pharmacy service (JSON, for systems without FHIR)."""
    result = referral_service.create_referral_from_json(
        session=session, referral_in=referral_in, caller=user, idempotency_key=idempotency_key
    )
    public = referral_service.to_public(result.referral)
    created = ReferralCreated.model_construct(**dict(public), warnings=[])
    if not result.created:
        return model_response(created, status_code=200, headers={"Idempotent-Replayed": "true"})
    return model_response(created, status_code=201)


@router.get("", response_model=ReferralsPublic, responses=error_responses(400, 401, 403, 422))
def read_referrals(
    session: SessionDep,
    user: PatientDataReader,
    audit: ReadAudit,
    status: ReferralStatus | None = None,
    service: Service | None = None,
    since: Annotated[
        IsoDateTime | None, Query(description="Only referrals made at or after this instant")
    ] = None,
    due: Annotated[
        DueState | None,
        Query(
            description="Only open referrals (received or accepted) whose due time is still "
            "ahead (`due`) or has passed (`overdue`)"
        ),
    ] = None,
    order: Annotated[
        Literal["newest", "urgency"],
        Query(
            description="`newest` first, or `urgency`: urgent before routine, then the soonest "
            "due (a pharmacy's inbox)"
        ),
    ] = "newest",
    cursor: Annotated[str | None, Query(description="next_cursor from the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=settings.page_size_max)] = settings.page_size_default,
) -> Response:
    """List the referrals the caller may see, newest first or by urgency, with cursor paging."""
    filters = referral_service.ReferralFilter(
        status=status, service=service, created_since=since, due=due
    )
    page, next_cursor = referral_service.list_referral_rows(
        session=session,
        caller=user,
        filters=filters,
        cursor=cursor,
        limit=limit,
        order=referral_service.ReferralOrder(order),
    )
    audit.record(page)
    listed = ReferralsPublic(
        data=[referral_service.to_public(r) for r in page], next_cursor=next_cursor
    )
    return model_response(listed, status_code=200)


@router.get(
    "/{referral_id}", response_model=ReferralPublic, responses=error_responses(401, 403, 404)
)
def read_referral(referral: AuditedReferral, response: Response) -> ReferralPublic:
    """Get one referral the caller may see (another organisation's referral reads as 404)."""
    response.headers["ETag"] = etag(referral.version)
    return referral_service.to_public(referral)


@router.get(
    "/{referral_id}/history",
    response_model=ReferralHistory,
    responses=error_responses(401, 403, 404),
)
def read_referral_history(session: SessionDep, referral: AuditedReferral) -> ReferralHistory:
    """The referral's whole timeline: every state change, who made it and when."""
    return lifecycle.read_history(session=session, referral=referral)


IfMatch = Annotated[str | None, Header(description='The ETag from the last read, e.g. W/"3"')]
_ACTION_ERRORS = error_responses(400, 401, 403, 404, 409, 412, 422, 428)


def _acted(referral: Referral) -> Response:
    """The changed referral and its new ETag (rendered here: a sync route's returned model would
    be validated again in one more worker-thread hand-off)."""
    return model_response(
        referral_service.to_public(referral),
        status_code=200,
        headers={"ETag": etag(referral.version)},
    )


@router.post("/{referral_id}/accept", response_model=ReferralPublic, responses=_ACTION_ERRORS)
def accept_referral(
    session: SessionDep,
    user: Pharmacy,
    target: ReferralToChange,
    body: ActionIn | None = None,
    if_match: IfMatch = None,
) -> Response:
    """The receiving pharmacy accepts the referral."""
    referral = target.load(session)
    version = expected_version(if_match, body.version if body else None)
    return _acted(
        lifecycle.accept_referral(session=session, referral=referral, caller=user, version=version)
    )


@router.post("/{referral_id}/decline", response_model=ReferralPublic, responses=_ACTION_ERRORS)
def decline_referral(
    session: SessionDep,
    user: Pharmacy,
    target: ReferralToChange,
    body: DeclineIn,
    if_match: IfMatch = None,
) -> Response:
    """The receiving pharmacy declines the referral with a reason code; the referrer is told."""
    referral = target.load(session)
    version = expected_version(if_match, body.version)
    declined = lifecycle.decline_referral(
        session=session,
        referral=referral,
        caller=user,
        version=version,
        reason_code=body.reason_code,
        reason=body.reason,
    )
    return _acted(declined)


@router.post("/{referral_id}/forward", response_model=ForwardedPublic, responses=_ACTION_ERRORS)
def forward_referral(
    session: SessionDep,
    user: Pharmacy,
    target: ReferralToChange,
    body: ForwardIn,
    if_match: IfMatch = None,
) -> Response:
    """Forward to another pharmacy registered for the service, which receives it as a new referral."""
    referral = target.load(session)
    version = expected_version(if_match, body.version)
    result = lifecycle.forward_referral(
        session=session,
        referral=referral,
        caller=user,
        version=version,
        pharmacy_ods=body.pharmacy_ods,
        reason=body.reason,
    )
    forwarded = ForwardedPublic(
        original=referral_service.to_public(result.original),
        forwarded=referral_service.to_public(result.forwarded),
    )
    return model_response(
        forwarded, status_code=200, headers={"ETag": etag(result.original.version)}
    )


@router.post("/{referral_id}/return", response_model=ReferralPublic, responses=_ACTION_ERRORS)
def return_referral(
    session: SessionDep,
    user: Pharmacy,
    target: ReferralToChange,
    body: ReasonIn,
    if_match: IfMatch = None,
) -> Response:
    """Return the referral to the referrer with a reason (e.g. needs a GP examination)."""
    referral = target.load(session)
    version = expected_version(if_match, body.version)
    returned = lifecycle.return_referral(
        session=session,
        referral=referral,
        caller=user,
        version=version,
        reason=body.reason,
    )
    return _acted(returned)


@router.post("/{referral_id}/no-contact", response_model=ReferralPublic, responses=_ACTION_ERRORS)
def record_no_contact(
    session: SessionDep,
    user: Pharmacy,
    target: ReferralToChange,
    body: NoContactIn | None = None,
    if_match: IfMatch = None,
) -> Response:
    """Close the referral because the patient did not make contact."""
    referral = target.load(session)
    version = expected_version(if_match, body.version if body else None)
    closed = lifecycle.record_no_contact(
        session=session,
        referral=referral,
        caller=user,
        version=version,
        reason=body.reason if body else None,
    )
    return _acted(closed)


@router.post("/{referral_id}/cancel", response_model=ReferralPublic, responses=_ACTION_ERRORS)
def cancel_referral(
    session: SessionDep,
    user: Referrer,
    target: ReferralToChange,
    body: ReasonIn,
    if_match: IfMatch = None,
) -> Response:
    """The referrer cancels the referral (only before it is completed)."""
    referral = target.load(session)
    version = expected_version(if_match, body.version)
    cancelled = lifecycle.cancel_by_referrer(
        session=session,
        referral=referral,
        caller=user,
        version=version,
        reason=body.reason,
    )
    return _acted(cancelled)
