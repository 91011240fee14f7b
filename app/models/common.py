"""Schemas shared by every JSON route."""

from pydantic import BaseModel, ConfigDict


class FieldError(BaseModel):
    field: str
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every JSON error: the error class, a human-readable detail, and field-level errors."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "error": "ValidationFailed",
                "detail": "The request is not valid.",
                "fields": [
                    {
                        "field": "patient.nhs_number",
                        "code": "invalid",
                        "message": "Value error, not a valid NHS number (10 digits with a modulus 11 check digit)",
                    }
                ],
            }
        }
    )

    error: str
    detail: str
    fields: list[FieldError] | None = None
