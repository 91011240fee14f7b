"""FHIR search parameter parsing (pure)."""

import re
from datetime import UTC, date, datetime, time

from app.core.errors import BadRequest, Issue
from app.fhir.service_request import STATUS_TO_FHIR
from app.models.enums import ReferralStatus

PREFIXES = ("gt", "ge", "lt", "le", "eq")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def parse_date_param(name: str, value: str) -> tuple[str, datetime]:
    """`_lastUpdated=gt2026-11-01T10:00:00Z` -> ("gt", instant); a bare date means its midnight UTC."""
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    try:
        if "T" in text:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError
        else:
            moment = datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    except ValueError as exc:
        raise BadRequest(
            f"{name} must be a FHIR date or instant with an optional gt, ge, lt, le prefix.",
            issues=[Issue("invalid", "Unparseable date search parameter.", name)],
        ) from exc
    return prefix, moment


def statuses_for(fhir_status: str) -> frozenset[ReferralStatus]:
    matching = frozenset(s for s, code in STATUS_TO_FHIR.items() if code == fhir_status)
    if not matching and fhir_status not in {"draft", "on-hold", "entered-in-error", "unknown"}:
        raise BadRequest(
            "status must be a FHIR request-status code.",
            issues=[Issue("code-invalid", "Unknown status code.", "status")],
        )
    return matching


def parse_reference_param(name: str, value: str, resource_type: str, *, base_url: str) -> str:
    """`based-on=ServiceRequest/{id}` (or the same under this server's base URL) -> the id."""
    relative = value.removeprefix(f"{base_url.rstrip('/')}/")
    kind, _, resource_id = relative.partition("/")
    if kind != resource_type or not FHIR_ID.fullmatch(resource_id):
        raise BadRequest(
            f"{name} must be a reference to a {resource_type}: {resource_type}/<id>.",
            issues=[Issue("invalid", f"{name} is not a {resource_type} reference.", name)],
        )
    return resource_id
