"""FHIR responses: application/fhir+json, rendered without nulls.

A fhir.resources model is rendered with its own serialiser; a plain dict (the hot path: mappers
whose output the tests validate against the R4B models and the FHIR JSON schema) with orjson.
"""

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from app.fhir.resources import Resource

FHIR_JSON = "application/fhir+json"


class FHIRResponse(Response):
    media_type = FHIR_JSON

    def __init__(
        self,
        content: Resource | dict[str, Any],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content=content, status_code=status_code, headers=headers)

    def render(self, content: Any) -> bytes:
        if isinstance(content, Resource):
            return content.model_dump_json(exclude_none=True).encode()
        assert isinstance(content, dict)
        return orjson.dumps(content)
