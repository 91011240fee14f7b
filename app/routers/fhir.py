"""FHIR R4 endpoints: BaRS $process-message, ServiceRequest, Task and Organization reads, summary
Bundles and Compositions, metadata."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.datastructures import URL

from app.auth.deps import CurrentUser, PatientDataReader, Referrer
from app.core.config import settings
from app.core.errors import BadRequest, Issue, NotFound
from app.db.base import utc_now
from app.db.session import SessionDep
from app.fhir import composition as composition_fhir
from app.fhir import organization as organization_fhir
from app.fhir import search, systems
from app.fhir import service_request as service_request_fhir
from app.fhir import task as task_fhir
from app.fhir.capability import capability_statement
from app.fhir.responses import FHIR_JSON, FHIRResponse
from app.models.delivery import MessageFormat
from app.routers.deps import AuditedReferral, RawBody, ReadAudit
from app.routers.fhir_docs import (
    BUNDLE_SCHEMA,
    COMPOSITION_SEARCH_PARAMETERS,
    OPERATION_OUTCOME_RESPONSES,
    PROCESS_MESSAGE_EXAMPLE,
    fhir_response,
)
from app.services import bars_intake, summaries
from app.services import organisations as organisation_service
from app.services import referrals as referral_service

router = APIRouter(prefix="/fhir", tags=["fhir"], default_response_class=FHIRResponse)
STARTED = utc_now()


@router.get("/metadata", responses=fhir_response("CapabilityStatement"))
def read_metadata() -> FHIRResponse:
    """The server's CapabilityStatement (FHIR 4.0.1)."""
    return FHIRResponse(
        capability_statement(
            base_url=settings.public_base_url, software_version="0.1.0", published=STARTED
        )
    )


@router.post(
    "/$process-message",
    responses={
        **fhir_response("Bundle", "servicerequest-response message"),
        **OPERATION_OUTCOME_RESPONSES,
    },
    openapi_extra={
        "parameters": [
            {
                "name": "X-Request-Id",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
                "description": "Unique per request; a repeat is refused with 409 REC_CONFLICT.",
            },
            {
                "name": "X-Correlation-Id",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
                "description": "Same across a conversation.",
            },
            {
                "name": "NHSD-Target-Identifier",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": 'Base64 of {"system": ods-organization-code or dos-service-id, "value": ...}.',
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                FHIR_JSON: {
                    "schema": BUNDLE_SCHEMA,
                    "examples": {"bp-referral": PROCESS_MESSAGE_EXAMPLE},
                },
                "application/json": {
                    "schema": BUNDLE_SCHEMA,
                    "examples": {"bp-referral": PROCESS_MESSAGE_EXAMPLE},
                },
            },
        },
    },
)
def process_message(
    request: Request, body: RawBody, session: SessionDep, user: Referrer
) -> FHIRResponse:
    """BaRS $process-message: a new referral (reason new) or a cancellation (reason update)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    result = bars_intake.process_message(session=session, body=body, headers=headers, caller=user)
    return FHIRResponse(result.bundle)


@router.get(
    "/ServiceRequest/{referral_id}",
    responses={**fhir_response("ServiceRequest"), **OPERATION_OUTCOME_RESPONSES},
)
def read_service_request(referral: AuditedReferral) -> FHIRResponse:
    """A referral as a FHIR ServiceRequest (another organisation's reads as 404)."""
    return FHIRResponse(service_request_fhir.service_request_json(referral))


@router.get(
    "/ServiceRequest",
    responses={**fhir_response("Bundle", "searchset"), **OPERATION_OUTCOME_RESPONSES},
)
def search_service_requests(
    request: Request,
    session: SessionDep,
    user: PatientDataReader,
    audit: ReadAudit,
    status: Annotated[
        str | None, Query(description="FHIR request status: active, revoked, completed")
    ] = None,
    last_updated: Annotated[
        list[str] | None,
        Query(alias="_lastUpdated", description="e.g. gt2026-11-01T00:00:00Z; may repeat"),
    ] = None,
    count: Annotated[
        int, Query(alias="_count", ge=1, le=settings.page_size_max)
    ] = settings.page_size_default,
    cursor: Annotated[str | None, Query(alias="_cursor", description="From the next link")] = None,
) -> FHIRResponse:
    """Search the caller's referrals as ServiceRequests, oldest change first, with next links."""
    bounds: dict[str, Any] = {}
    for value in last_updated or []:
        prefix, moment = search.parse_date_param("_lastUpdated", value)
        field = {"gt": "updated_after", "ge": "updated_from", "lt": "updated_before"}.get(prefix)
        if field is None:
            raise BadRequest(
                "_lastUpdated supports the gt, ge and lt prefixes.",
                issues=[Issue("not-supported", "Unsupported _lastUpdated prefix.", "_lastUpdated")],
            )
        bounds[field] = moment
    filters = referral_service.ReferralFilter(
        statuses=search.statuses_for(status) if status else None, **bounds
    )
    page, next_cursor = referral_service.list_referrals(
        session=session,
        caller=user,
        filters=filters,
        cursor=cursor,
        limit=count,
        order=referral_service.ReferralOrder.LAST_UPDATED,
    )
    audit.record(page)
    self_url = str(request.url)
    next_url = str(URL(self_url).include_query_params(_cursor=next_cursor)) if next_cursor else None
    return FHIRResponse(
        service_request_fhir.searchset_json(page, self_url=self_url, next_url=next_url)
    )


@router.get(
    "/Task/{referral_id}",
    responses={**fhir_response("Task"), **OPERATION_OUTCOME_RESPONSES},
)
def read_task(referral: AuditedReferral) -> FHIRResponse:
    """The receiving pharmacy's work on a referral as a FHIR Task (id = the referral id)."""
    return FHIRResponse(task_fhir.task_json(referral))


@router.get(
    "/Task",
    responses={**fhir_response("Bundle", "Task searchset"), **OPERATION_OUTCOME_RESPONSES},
)
def search_tasks(
    request: Request,
    session: SessionDep,
    user: PatientDataReader,
    audit: ReadAudit,
    based_on: Annotated[
        str,
        Query(
            alias="based-on",
            max_length=300,
            description="ServiceRequest/{id}: the referral's Task, and the Task of the referral "
            "it was forwarded as",
        ),
    ],
) -> FHIRResponse:
    """The pharmacy work on a referral as Tasks (empty for a referral the caller may not see)."""
    referral_id = search.parse_reference_param(
        "based-on", based_on, "ServiceRequest", base_url=f"{settings.public_base_url}/fhir"
    )
    referrals = referral_service.list_referral_and_forwards(
        session=session, referral_id=referral_id, caller=user
    )
    audit.record(referrals)
    return FHIRResponse(task_fhir.searchset_json(referrals, self_url=str(request.url)))


@router.get(
    "/Organization/{ods}",
    responses={**fhir_response("Organization"), **OPERATION_OUTCOME_RESPONSES},
)
def read_organization(
    session: SessionDep, _user: CurrentUser, ods: Annotated[str, Path(max_length=10)]
) -> FHIRResponse:
    """A directory organisation as a FHIR Organization (id = ODS code)."""
    organisation = organisation_service.get_organisation_or_raise(session=session, ods_code=ods)
    public = organisation_service.to_public(
        session=session, organisation=organisation, on=utc_now().date()
    )
    return FHIRResponse(organization_fhir.to_organization(public))


@router.get(
    "/Organization",
    responses={**fhir_response("Bundle", "searchset"), **OPERATION_OUTCOME_RESPONSES},
)
def search_organizations(
    request: Request,
    session: SessionDep,
    _user: CurrentUser,
    identifier: Annotated[
        str, Query(max_length=120, description=f"{systems.ODS_ORGANISATION}|<ODS code>")
    ],
) -> FHIRResponse:
    """Find an organisation by ODS identifier (token search)."""
    system, _, value = identifier.rpartition("|")
    if system and systems.ALIASES.get(system, system) != systems.ODS_ORGANISATION:
        raise BadRequest(
            "identifier must use the ODS organisation code system.",
            issues=[Issue("not-supported", "Unsupported identifier system.", "identifier")],
        )
    found = []
    try:
        organisation = organisation_service.get_organisation_or_raise(
            session=session, ods_code=value
        )
        found.append(
            organisation_service.to_public(
                session=session, organisation=organisation, on=utc_now().date()
            )
        )
    except NotFound:
        pass
    return FHIRResponse(organization_fhir.to_searchset(found, self_url=str(request.url)))


@router.get(
    "/Bundle/{bundle_id}",
    responses={**fhir_response("Bundle", "summary document"), **OPERATION_OUTCOME_RESPONSES},
)
def read_bundle(
    session: SessionDep,
    user: PatientDataReader,
    audit: ReadAudit,
    bundle_id: Annotated[str, Path(max_length=64)],
    format: Annotated[
        MessageFormat,
        Query(alias="_format", description="fhir-r4 (default) or gp-connect-update-record"),
    ] = MessageFormat.R4,
) -> FHIRResponse:
    """A consultation summary document Bundle (id = the consultation id)."""
    referral, consultation = summaries.find_summary(
        session=session, bundle_id=bundle_id, caller=user
    )
    audit.record(referral)
    return FHIRResponse(
        summaries.render_required(
            session=session, referral=referral, consultation=consultation, fmt=format
        )
    )


@router.get(
    "/Composition",
    responses={**fhir_response("Bundle", "Composition searchset"), **OPERATION_OUTCOME_RESPONSES},
    openapi_extra={"parameters": COMPOSITION_SEARCH_PARAMETERS},
)
def search_compositions(
    request: Request, session: SessionDep, user: PatientDataReader, audit: ReadAudit
) -> FHIRResponse:
    """Find consultation summaries: the Compositions leading their documents, oldest first."""
    criteria = composition_fhir.parse_search(
        request.query_params.multi_items(),
        default_count=settings.page_size_default,
        max_count=settings.page_size_max,
    )
    page = summaries.search_summaries(
        session=session,
        caller=user,
        filters=summaries.SummaryFilter(nhs_number=criteria.nhs_number, recorded=criteria.recorded),
        cursor=criteria.cursor,
        limit=criteria.count,
    )
    audit.record([head.referral for head in page.heads])
    self_url = URL(str(request.url))
    next_url = self_url.include_query_params(_cursor=page.next_cursor) if page.next_cursor else None
    return FHIRResponse(
        composition_fhir.searchset_json(
            page.heads,
            total=page.total,
            base_url=f"{str(request.base_url).rstrip('/')}{router.prefix}",
            self_url=str(self_url),
            next_url=str(next_url) if next_url else None,
        )
    )


@router.get(
    "/Composition/{composition_id}",
    responses={**fhir_response("Composition"), **OPERATION_OUTCOME_RESPONSES},
)
def read_composition(
    session: SessionDep,
    user: PatientDataReader,
    audit: ReadAudit,
    composition_id: Annotated[str, Path(max_length=64)],
) -> FHIRResponse:
    """A consultation summary's Composition (id = the document Bundle id)."""
    head = summaries.read_summary_head(session=session, composition_id=composition_id, caller=user)
    audit.record(head.referral)
    return FHIRResponse(
        composition_fhir.composition_json(
            consultation=head.consultation, referral=head.referral, pharmacy_name=head.pharmacy_name
        )
    )
