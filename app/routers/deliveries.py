"""Push delivery: endpoint registration and delivery state."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.auth.deps import DeliveryViewer, Referrer
from app.db.session import SessionDep
from app.models.delivery import (
    ENDPOINT_EXAMPLE,
    DeliveriesPublic,
    DeliveryPublic,
    DeliveryStatus,
    EndpointCreate,
    EndpointPublic,
)
from app.routers.examples import error_responses
from app.services import delivery as delivery_service

router = APIRouter(prefix="/api/v1", tags=["delivery"])


@router.post(
    "/endpoints",
    response_model=EndpointPublic,
    status_code=201,
    responses=error_responses(401, 403, 422),
)
def create_endpoint(
    session: SessionDep, user: Referrer, endpoint_in: EndpointCreate
) -> EndpointPublic:
    """Register your system's endpoint: pharmref pushes signed summaries and events to it."""
    endpoint = delivery_service.register_endpoint(
        session=session,
        caller=user,
        url=str(endpoint_in.url),
        fmt=endpoint_in.format,
        secret=endpoint_in.secret.get_secret_value(),
    )
    return EndpointPublic.model_validate(endpoint)


@router.get(
    "/endpoints",
    response_model=list[EndpointPublic],
    responses={
        200: {"content": {"application/json": {"example": [ENDPOINT_EXAMPLE]}}},
        **error_responses(401, 403),
    },
)
def read_endpoints(session: SessionDep, user: Referrer) -> list[EndpointPublic]:
    """Your organisation's active endpoints (secrets are never returned)."""
    return [
        EndpointPublic.model_validate(e)
        for e in delivery_service.list_endpoints(session=session, caller=user)
    ]


@router.delete(
    "/endpoints/{endpoint_id}", status_code=204, responses=error_responses(401, 403, 404)
)
def delete_endpoint(session: SessionDep, user: Referrer, endpoint_id: uuid.UUID) -> Response:
    """Stop pushing to an endpoint (undelivered messages to it are left as they are)."""
    delivery_service.deactivate_endpoint(session=session, caller=user, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.get(
    "/deliveries", response_model=DeliveriesPublic, responses=error_responses(401, 403, 422)
)
def read_deliveries(
    session: SessionDep,
    user: DeliveryViewer,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveriesPublic:
    """Messages to your organisation and their delivery state (admin: all), newest first."""
    rows = delivery_service.list_deliveries(
        session=session, caller=user, status=status, limit=limit
    )
    return DeliveriesPublic(data=[DeliveryPublic.model_validate(r) for r in rows])


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryPublic,
    responses=error_responses(401, 403, 404, 409),
)
def retry_delivery(
    session: SessionDep, user: DeliveryViewer, delivery_id: uuid.UUID
) -> DeliveryPublic:
    """Queue a dead-lettered or failing message again now."""
    return DeliveryPublic.model_validate(
        delivery_service.retry_delivery(session=session, caller=user, message_id=delivery_id)
    )
