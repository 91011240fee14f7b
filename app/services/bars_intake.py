"""BaRS `$process-message`: headers, target resolution, new referrals and cancellations."""

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlmodel import Session

from app.core.config import settings
from app.core.errors import BadRequest, Issue, NotFound, Unprocessable, ValidationFailed
from app.db.base import utc_now
from app.fhir import bars, systems
from app.fhir.service_request import response_message_json
from app.models.enums import Intake, OrgKind, Service
from app.models.user import User
from app.services import organisations as organisation_service
from app.services import referrals as referral_service


@dataclass(frozen=True, slots=True)
class Target:
    pharmacy_ods: str
    service: Service | None  # known when the target is a service id


@dataclass(frozen=True, slots=True)
class MessageResult:
    bundle: dict[str, Any]  # FHIR JSON of the servicerequest-response Bundle
    created: bool


def _header_uuid(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    try:
        if value is None:
            raise ValueError
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise BadRequest(
            f"The {name} header must be a UUID.",
            issues=[Issue("invalid", f"Missing or malformed {name} header.", name)],
        ) from exc


def decode_target(value: str | None) -> tuple[str, str]:
    """NHSD-Target-Identifier: Base64 of JSON {"system": ..., "value": ...}."""
    where = "NHSD-Target-Identifier"
    if not value:
        raise BadRequest(
            "The NHSD-Target-Identifier header is required.",
            issues=[Issue("required", "Missing header.", where)],
        )
    try:
        decoded = orjson.loads(base64.b64decode(value + "=" * (-len(value) % 4), validate=True))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise BadRequest(
            "The base64 decoding of the NHSD-Target-Identifier header failed.",
            issues=[Issue("invalid", "Header is not Base64-encoded JSON.", where)],
        ) from exc
    if (
        not isinstance(decoded, dict)
        or not isinstance(decoded.get("system"), str)
        or not isinstance(decoded.get("value"), str)
    ):
        raise BadRequest(
            "Invalid schema for NHSD-Target-Identifier header.",
            issues=[Issue("invalid", "Expected JSON with string system and value.", where)],
        )
    system: str = decoded["system"]
    return systems.ALIASES.get(system, system), str(decoded["value"])


def resolve_target(*, session: Session, system: str, value: str) -> Target:
    not_found = NotFound(
        "The target is not a pharmacy or pharmacy service in the directory.",
        issues=[Issue("not-found", "Unknown receiving service.", "NHSD-Target-Identifier")],
    )
    if system == systems.DOS_SERVICE_ID:
        registration = organisation_service.find_pharmacy_by_service_id(
            session=session, service_id=value
        )
        if registration is None:
            raise not_found
        pharmacy_ods, service = registration
        return Target(pharmacy_ods=pharmacy_ods, service=service)
    if system == systems.ODS_ORGANISATION:
        kind = organisation_service.kind_of(session=session, ods_code=value)
        if kind is not OrgKind.PHARMACY:
            raise not_found
        return Target(pharmacy_ods=value.upper(), service=None)
    raise BadRequest(
        "NHSD-Target-Identifier system must be the ODS organisation code or the directory service id.",
        issues=[Issue("invalid", "Unsupported identifier system.", "NHSD-Target-Identifier")],
    )


def process_message(
    *, session: Session, body: bytes, headers: Mapping[str, str], caller: User
) -> MessageResult:
    """Handle one BaRS message: a new referral or a cancellation (update)."""
    request_id = _header_uuid(headers, "X-Request-Id")
    correlation_id = _header_uuid(headers, "X-Correlation-Id")
    system, value = decode_target(headers.get("nhsd-target-identifier"))
    target = resolve_target(session=session, system=system, value=value)
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(
            "The body is not JSON.", issues=[Issue("structure", "Malformed JSON.", "Bundle")]
        ) from exc
    message = bars.parse_message(raw, supported_versions=settings.supported_bars_versions)
    key = referral_service.IntakeKey(kind="x-request-id", key=request_id, body=body, replay=False)
    now = utc_now()
    if message.reason == "update":
        cancel = bars.to_cancel_request(message)
        referral = referral_service.get_visible_referral(
            session=session, referral_id=cancel.referral_id, caller=caller
        )
        if referral.pharmacy_ods != target.pharmacy_ods:
            raise NotFound("The referral was not sent to this target.")
        referral = referral_service.cancel_referral(
            session=session,
            referral=referral,
            caller=caller,
            reason=cancel.reason,
            sender_last_updated=cancel.last_updated,
            key=key,
        )
        bundle = response_message_json(
            referral=referral,
            request_bundle_id=message.bundle_id,
            request_header=message.header,
            warnings=cancel.warnings,
            now=now,
        )
        return MessageResult(bundle=bundle, created=False)
    new = bars.to_new_referral(
        message,
        pharmacy_ods=target.pharmacy_ods,
        caller_org=caller.org,
        correlation_id=correlation_id,
    )
    if target.service is not None and target.service is not new.service:
        raise Unprocessable(
            f"The target service id is for {target.service}, but the referral is for {new.service}.",
            issues=[
                Issue(
                    "business-rule",
                    "Target service does not match the use case.",
                    "NHSD-Target-Identifier",
                )
            ],
        )
    result = referral_service.create_referral(
        session=session, new=new, caller=caller, intake=Intake.FHIR, key=key
    )
    bundle = response_message_json(
        referral=result.referral,
        request_bundle_id=message.bundle_id,
        request_header=message.header,
        warnings=result.warnings,
        now=now,
    )
    return MessageResult(bundle=bundle, created=result.created)
