"""Helpers shared by the tests: tokens, BaRS headers and the official examples."""

import base64
import json
import uuid
from pathlib import Path
from typing import Any

from app.auth.tokens import create_access_token
from app.models.enums import Role

EXAMPLES = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "reference"
    / "bars-examples"
    / "json-converted"
)


def token_for(role: Role | str, org: str) -> str:
    return create_access_token(subject=f"test:{role}:{org}", org=org, role=Role(role))


def auth(role: Role | str, org: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(role, org)}"}


def target_header(value: str, system: str = "https://fhir.nhs.uk/Id/ods-organization-code") -> str:
    return base64.b64encode(json.dumps({"system": system, "value": value}).encode()).decode()


def bars_headers(
    *,
    org: str = "A81001",
    role: Role = Role.GP_PRACTICE,
    target: str = "FA001",
    request_id: str | None = None,
) -> dict[str, str]:
    return {
        **auth(role, org),
        "X-Request-Id": request_id or str(uuid.uuid4()),
        "X-Correlation-Id": str(uuid.uuid4()),
        "NHSD-Target-Identifier": target_header(target),
        "Content-Type": "application/fhir+json",
    }


def load_example(name: str) -> dict[str, Any]:
    """An official BaRS example (json-converted), unmodified."""
    matches = sorted(EXAMPLES.glob(f"{name}*.json"))
    assert matches, f"no example {name} under {EXAMPLES}"
    data: dict[str, Any] = json.loads(matches[0].read_text())
    return data
