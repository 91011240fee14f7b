"""Shared router dependencies: loaders that 404 for what the caller may not see, the audit of
reads of patient data, and the per-client rate limit."""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app.auth.deps import PatientDataReader
from app.auth.tokens import decode_token
from app.core.config import settings
from app.core.errors import AppError, BadRequest, Issue, TooManyRequests
from app.db.base import utc_now
from app.db.session import RequestSession, SessionDep
from app.middleware import route_template
from app.models.referral import Referral
from app.models.user import User
from app.services import audit as audit_service
from app.services import rate_limit
from app.services import referrals as referral_service

logger = logging.getLogger("pharmref.rate_limit")


def get_visible_referral(
    session: SessionDep,
    user: PatientDataReader,
    referral_id: Annotated[str, Path(description="The referral id (UUID) returned at intake.")],
) -> Referral:
    return referral_service.get_visible_referral(
        session=session, referral_id=referral_id, caller=user
    )


VisibleReferral = Annotated[Referral, Depends(get_visible_referral)]


@dataclass(frozen=True, slots=True)
class ReferralLookup:
    """The referral a route changes, looked up (or 404) when the route runs, in its worker thread
    with its other statements: as a dependency of its own, a sync load is one more worker-thread
    hand-off per request."""

    referral_id: str
    caller: User

    def load(self, session: Session) -> Referral:
        return referral_service.get_visible_referral(
            session=session, referral_id=self.referral_id, caller=self.caller
        )


async def lookup_referral(
    user: PatientDataReader,
    referral_id: Annotated[str, Path(description="The referral id (UUID) returned at intake.")],
) -> ReferralLookup:
    return ReferralLookup(referral_id=referral_id, caller=user)


ReferralToChange = Annotated[ReferralLookup, Depends(lookup_referral)]


async def read_raw_body(request: Request) -> bytes:
    """The request body as sent: FHIR intake parses it once and stores it verbatim."""
    return await request.body()


RawBody = Annotated[bytes, Depends(read_raw_body)]


def expected_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version an update is based on: from `If-Match: W/"3"` (or "3"), else the body's field."""
    if if_match is None:
        return body_version
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise BadRequest(
            'If-Match must be the referral\'s ETag, e.g. W/"3".',
            issues=[Issue("invalid", "Malformed If-Match header.", "If-Match")],
        )
    return int(tag)


def etag(version: int) -> str:
    return f'W/"{version}"'


def model_response(
    model: BaseModel, *, status_code: int, headers: Mapping[str, str] | None = None
) -> Response:
    """The JSON FastAPI would send for a route's declared response_model, rendered here: a route
    that returns a Response skips FastAPI's re-validation of its own (already typed) answer, which
    for a sync route is one more worker-thread hand-off. Same bytes: pydantic's JSON by alias."""
    return Response(
        content=model.model_dump_json(by_alias=True),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


# ---- audit of reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadAuditor:
    """Records that the caller was shown referrals' patient data through this request's route."""

    session: Session
    caller: User
    method: str
    route: str

    def record(
        self, referrals: Referral | Iterable[Referral | referral_service.ReferralRow]
    ) -> None:
        """Record the referrals shown; an answer that shows none (an empty search) disclosed
        nothing, and a poll that finds nothing new writes nothing."""
        shown = [referrals] if isinstance(referrals, Referral) else list(referrals)
        if not shown:
            return
        audit_service.record_read(
            session=self.session,
            caller=self.caller,
            method=self.method,
            route=self.route,
            referral_ids=[referral.id for referral in shown],
        )


async def get_read_auditor(
    request: Request, session: SessionDep, user: PatientDataReader
) -> ReadAuditor:
    return ReadAuditor(
        session=session, caller=user, method=request.method, route=route_template(request.scope)
    )


ReadAudit = Annotated[ReadAuditor, Depends(get_read_auditor)]
"""For searches and reads that resolve referrals themselves: `audit.record(page)`."""


def get_audited_referral(referral: VisibleReferral, audit: ReadAudit) -> Referral:
    audit.record(referral)
    return referral


AuditedReferral = Annotated[Referral, Depends(get_audited_referral)]
"""A VisibleReferral whose read is audited (committed before the route returns any data)."""


# ---- rate limit ----------------------------------------------------------------------------------


class _VerifiedTokens:
    """Rate-limit keys of tokens this process verified in the last minute, so the limit does not
    verify a signature per request on top of the authentication's (the key only chooses whose
    budget a request counts against; authentication still checks every token in full)."""

    ttl_seconds = 60.0
    max_entries = 4096

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def key(self, token: str) -> str | None:
        now = time.monotonic()
        with self.lock:
            known = self.keys.get(token)
        if known is not None and known[1] > now:
            return known[0]
        try:
            user = decode_token(token)
        except AppError:
            return None  # an invalid token counts against the address it came from
        key = rate_limit.client_key(org=user.org, subject=user.subject)
        with self.lock:
            self.keys[token] = (key, now + self.ttl_seconds)
            self.keys.move_to_end(token)
            while len(self.keys) > self.max_entries:
                self.keys.popitem(last=False)
        return key


_verified_tokens = _VerifiedTokens()


def _client_key(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        key = _verified_tokens.key(token)
        if key is not None:
            return key
    return rate_limit.client_key(ip=request.client.host if request.client else "unknown")


async def enforce_rate_limit(request: Request, session: SessionDep) -> None:
    """429 with Retry-After once a client has made PHARMREF_RATE_LIMIT_PER_MINUTE requests in
    the current minute (0: no limit). Counted in the database: in a request's session as the
    request's first statement, in the worker thread that runs it (no thread hand-off of its own);
    in any other session (the tests') at once, in a worker thread."""
    limit = settings.rate_limit_per_minute
    if limit <= 0:
        return
    key = _client_key(request)
    if isinstance(session, RequestSession):
        session.before_first_statement(partial(_count_on, key=key, limit=limit))
    else:
        await run_in_threadpool(_count_request, session, key, limit)


def _count_on(connection: Connection, *, key: str, limit: int) -> None:
    decision = rate_limit.hit_on(connection=connection, key=key, limit=limit, now=utc_now())
    if rate_limit.purge_due():
        try:
            rate_limit.purge_stale_on(connection=connection, now=utc_now())
        except SQLAlchemyError as exc:
            logger.warning("rate limit purge failed: %s", type(exc).__name__)
    _refuse_over(decision)


def _count_request(session: Session, key: str, limit: int) -> None:
    decision = rate_limit.hit(session=session, key=key, limit=limit, now=utc_now())
    if rate_limit.purge_due():
        try:
            rate_limit.purge_stale(session=session, now=utc_now())
        except SQLAlchemyError as exc:
            session.rollback()
            logger.warning("rate limit purge failed: %s", type(exc).__name__)
    _refuse_over(decision)


def _refuse_over(decision: rate_limit.Decision) -> None:
    if not decision.allowed:
        raise TooManyRequests(
            f"More than {decision.limit} requests in a minute from this client; "
            f"retry after {decision.retry_after} seconds.",
            headers={"Retry-After": str(decision.retry_after)},
        )


RateLimited = Depends(enforce_rate_limit)
