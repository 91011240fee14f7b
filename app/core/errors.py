"""One error hierarchy; app/routers/errors.py renders it as JSON or as a FHIR OperationOutcome.

Every error carries issues: what failed (a FHIR issue type), where (a field path or FHIRPath
expression) and a diagnostic that never contains patient-identifiable values.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Issue:
    code: str  # FHIR issue type: invalid, required, value, business-rule, not-found, ...
    diagnostics: str
    expression: str | None = None
    severity: str = "error"


@dataclass
class AppError(Exception):
    detail: str
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    status_code = 500
    issue_code = "exception"
    rec_code = "REC_SERVER_ERROR"

    def __post_init__(self) -> None:
        super().__init__(self.detail)
        if not self.issues:
            self.issues = [Issue(code=self.issue_code, diagnostics=self.detail)]

    @property
    def fhir_status_code(self) -> int:
        return self.status_code


class BadRequest(AppError):
    status_code = 400
    issue_code = "invalid"
    rec_code = "REC_BAD_REQUEST"


class Unauthorized(AppError):
    status_code = 401
    issue_code = "login"
    rec_code = "REC_UNAUTHORIZED"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')


class Forbidden(AppError):
    status_code = 403
    issue_code = "forbidden"
    rec_code = "REC_FORBIDDEN"


class NotFound(AppError):
    status_code = 404
    issue_code = "not-found"
    rec_code = "REC_NOT_FOUND"


class Conflict(AppError):
    status_code = 409
    issue_code = "conflict"
    rec_code = "REC_CONFLICT"


class Duplicate(Conflict):
    issue_code = "duplicate"


class InvalidTransition(Conflict):
    issue_code = "business-rule"


class PayloadTooLarge(AppError):
    status_code = 413
    issue_code = "too-costly"
    rec_code = "REC_BAD_REQUEST"


class HeadersTooLarge(AppError):
    status_code = 431
    issue_code = "too-costly"
    rec_code = "REC_BAD_REQUEST"


class TooManyRequests(AppError):
    status_code = 429
    issue_code = "throttled"
    rec_code = "REC_TOO_MANY_REQUESTS"


class Unprocessable(AppError):
    """The payload is well formed but breaks a business rule or names an unsupported version."""

    status_code = 422
    issue_code = "business-rule"
    rec_code = "REC_UNPROCESSABLE_ENTITY"


class NotSupported(Unprocessable):
    issue_code = "not-supported"


class ValidationFailed(AppError):
    """Field-level validation errors: 422 on the JSON API, 400 REC_BAD_REQUEST on FHIR (BaRS)."""

    status_code = 422
    issue_code = "invalid"
    rec_code = "REC_BAD_REQUEST"

    @property
    def fhir_status_code(self) -> int:
        return 400


class ServiceUnavailable(AppError):
    status_code = 503
    issue_code = "transient"
    rec_code = "REC_UNAVAILABLE"
