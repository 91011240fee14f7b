"""FHIR responses: application/fhir+json, rendered without nulls straight from the model."""

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from app.fhir.resources import Resource

FHIR_JSON = "application/fhir+json"


class FHIRResponse(Response):
    media_type = FHIR_JSON

    def __init__(
        self,
        content: Resource,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content=content, status_code=status_code, headers=headers)

    def render(self, content: Any) -> bytes:
        assert isinstance(content, Resource)
        return content.model_dump_json(exclude_none=True).encode()
