"""Candidate optimisations, applied by monkeypatching inside the profiling process only.

They exist to measure how much each suggested change in docs/performance.md would save; they are
not fixes (the app code is unchanged) and some skip checks a real fix must keep. Used by
`bench/profile_intake.py --what-if NAME` (repeatable) and, through bench/what_if_app.py, by
`bench/run.py --what-if NAME`.
"""

import functools
from collections.abc import Callable
from typing import Any

import orjson


def cache_import_string() -> None:
    """fhir_core resolves every nested resource's class with pydantic's import_string, whose
    first attempt is a failing import of "fhir.resources.R4B.patient.Patient" as a module."""
    import fhir_core.types

    fhir_core.types.import_string = functools.lru_cache(maxsize=None)(fhir_core.types.import_string)


def directory_cache() -> None:
    """Memoise the directory reads (organisations and pharmacy services change only on import)."""
    from app.services import organisations

    def memo(fn: Callable[..., Any]) -> Callable[..., Any]:
        cache: dict[tuple[tuple[str, Any], ...], Any] = {}

        @functools.wraps(fn)
        def wrapper(*, session: Any, **kwargs: Any) -> Any:
            key = tuple(sorted(kwargs.items()))
            if key not in cache:
                cache[key] = fn(session=session, **kwargs)
            return cache[key]

        return wrapper

    for name in ("get_organisation", "pharmacy_provides", "find_pharmacy_by_service_id"):
        setattr(organisations, name, memo(getattr(organisations, name)))


def no_idempotency_precheck() -> None:
    """Skip the SELECT before the INSERT; the unique constraint plus the existing IntegrityError
    fallback (which still looks the message up) already make intake exactly-once."""
    from app.services import referrals

    original = referrals._existing_message

    def existing_message(*, session: Any, caller: Any, key: Any) -> Any:
        if not session.info.get("bench_precheck_skipped"):
            session.info["bench_precheck_skipped"] = True
            return None
        return original(session=session, caller=caller, key=key)

    referrals._existing_message = existing_message


def _replace_engine(**overrides: Any) -> None:
    from sqlmodel import create_engine

    from app.core.config import settings
    from app.db import session

    options: dict[str, Any] = {
        "pool_size": 10,
        "max_overflow": 20,
        "pool_pre_ping": True,
        "pool_timeout": 5,
        "connect_args": {"connect_timeout": 5},
    }
    session.engine = create_engine(settings.database_url, **{**options, **overrides})


def pool_no_churn() -> None:
    """A pool as large as the threadpool (40 threads), so that connections above pool_size are
    not closed on return and re-opened by the next request (pool_size=10 churns under load)."""
    _replace_engine(pool_size=40, max_overflow=0)


def pool_no_churn_no_pre_ping() -> None:
    """As pool-no-churn, and no `SELECT 1` round trip on every checkout."""
    _replace_engine(pool_size=40, max_overflow=0, pool_pre_ping=False)


class _Raw:
    """Stands in for a fhir.resources model: holds the dict the mapper built."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


def raw_response() -> None:
    """Build the response message as dicts and serialise with orjson, without validating our own
    output through fhir.resources (validate the mapper's output in tests instead)."""
    from app.fhir import responses, service_request

    class _Shim:
        @staticmethod
        def model_validate(data: dict[str, Any]) -> _Raw:
            return _Raw(data)

    service_request.Bundle = _Shim  # type: ignore[assignment,misc]
    service_request.ServiceRequest = _Shim  # type: ignore[assignment,misc]

    original = responses.FHIRResponse.render

    def plain(value: Any) -> Any:
        if isinstance(value, _Raw):
            return value.data
        return orjson.loads(value.model_dump_json(exclude_none=True))

    def render(self: Any, content: Any) -> bytes:
        if isinstance(content, _Raw):
            return orjson.dumps(content.data, default=plain)
        return original(self, content)

    responses.FHIRResponse.render = render  # type: ignore[method-assign]


WHAT_IFS: dict[str, Callable[[], None]] = {
    "cache-import-string": cache_import_string,
    "directory-cache": directory_cache,
    "no-idempotency-precheck": no_idempotency_precheck,
    "raw-response": raw_response,
    "pool-no-churn": pool_no_churn,
    "pool-no-churn-no-pre-ping": pool_no_churn_no_pre_ping,
}
