"""Consultation records for a referral (JSON)."""

import uuid
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel

from app.auth.deps import Pharmacy
from app.db.session import SessionDep
from app.fhir.responses import FHIRResponse
from app.models.consultation import (
    BloodPressureConsultationIn,
    ConsultationIn,
    ConsultationPublic,
    ContraceptionConsultationIn,
    DmsStageIn,
    PharmacyFirstConsultationIn,
)
from app.models.delivery import MessageFormat
from app.routers.deps import (
    AuditedReferral,
    ReferralToChange,
    etag,
    expected_version,
    model_response,
)
from app.routers.examples import error_responses, json_error_responses
from app.services import consultations as consultation_service
from app.services import summaries

router = APIRouter(prefix="/api/v1/referrals", tags=["consultations"])


def _example(model: type[BaseModel]) -> dict[str, Any]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    return cast(dict[str, Any], extra["example"])


_EXAMPLES = {
    _example(model)["service"]: {"summary": title, "value": _example(model)}
    for model, title in (
        (PharmacyFirstConsultationIn, "Pharmacy First: sore throat, supply under the PGD"),
        (BloodPressureConsultationIn, "Blood pressure: clinic readings and a returned ABPM"),
        (ContraceptionConsultationIn, "Contraception: ongoing COC supply"),
        (DmsStageIn, "DMS stage 1: reconciliation"),
    )
}
_LIST_EXAMPLE = [_example(ConsultationPublic)]


@router.post(
    "/{referral_id}/consultation",
    response_model=ConsultationPublic,
    status_code=201,
    responses=error_responses(400, 401, 403, 404, 409, 412, 422, 428),
)
def create_consultation(
    session: SessionDep,
    user: Pharmacy,
    target: ReferralToChange,
    consultation_in: Annotated[ConsultationIn, Body(openapi_examples=_EXAMPLES)],
    if_match: Annotated[
        str | None, Header(description='The ETag from the last read, e.g. W/"2"')
    ] = None,
) -> Response:
    """Record the consultation (a DMS stage) and complete the referral when it ends the service."""
    referral = target.load(session)
    version = expected_version(if_match, consultation_in.version)
    consultation, updated = consultation_service.record_consultation(
        session=session,
        referral=referral,
        caller=user,
        consultation_in=consultation_in,
        version=version,
    )
    public = ConsultationPublic.model_validate(consultation).model_copy(
        update={"referral_status": updated.status, "referral_version": updated.version}
    )
    return model_response(public, status_code=201, headers={"ETag": etag(updated.version)})


@router.get(
    "/{referral_id}/consultations",
    response_model=list[ConsultationPublic],
    responses={
        200: {"content": {"application/json": {"example": _LIST_EXAMPLE}}},
        **error_responses(401, 403, 404),
    },
)
def read_consultations(session: SessionDep, referral: AuditedReferral) -> list[ConsultationPublic]:
    """The consultations recorded for a referral, oldest first."""
    return consultation_service.list_consultations(session=session, referral=referral)


@router.get(
    "/{referral_id}/summary",
    response_class=FHIRResponse,
    responses={
        200: {
            "description": "The consultation summary: a FHIR R4 document Bundle, or a GP Connect Update Record message",
            "content": {
                "application/fhir+json": {"example": {"resourceType": "Bundle", "type": "document"}}
            },
        },
        **json_error_responses(401, 403, 404, 422),
    },
)
def read_summary(
    session: SessionDep,
    referral: AuditedReferral,
    format: Annotated[
        MessageFormat | None,
        Query(alias="_format", description="fhir-r4 (default) or gp-connect-update-record"),
    ] = None,
    accept: Annotated[str | None, Header()] = None,
    consultation_id: Annotated[
        uuid.UUID | None, Query(description="A DMS stage; default the latest")
    ] = None,
) -> FHIRResponse:
    """The consultation summary for a referral, as the GP system takes it."""
    fmt = format or (
        MessageFormat.UPDATE_RECORD if accept and "fhirVersion=3.0" in accept else MessageFormat.R4
    )
    consultation = summaries.latest_consultation(
        session=session, referral=referral, consultation_id=consultation_id
    )
    return FHIRResponse(
        summaries.render_required(
            session=session, referral=referral, consultation=consultation, fmt=fmt
        )
    )
