"""Directory reads: organisations, their PCN and place, list size and registered services."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import ColumnElement, and_, bindparam, exists, or_
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from app.core.errors import NotFound
from app.db import raw
from app.db.session import execute_read
from app.models.enums import OrgKind, Service
from app.models.organisation import (
    ListSize,
    Membership,
    Organisation,
    OrganisationPublic,
    OrganisationsPublic,
    PharmacyService,
    ServicePublic,
)
from app.services import validation


def get_organisation(*, session: Session, ods_code: str) -> Organisation | None:
    code = ods_code.upper()
    # Whatever a caller sends (a path, a header, a token) is looked up only if it can be an ODS
    # code: PostgreSQL refuses some text outright (NUL), which would be a 500, not a 404.
    if not validation.ods_code_is_valid(code):
        return None
    rows = execute_read(session, select(Organisation).where(Organisation.ods_code == code))
    return rows[0][0] if rows else None


def get_organisation_or_raise(*, session: Session, ods_code: str) -> Organisation:
    organisation = get_organisation(session=session, ods_code=ods_code)
    if organisation is None:
        raise NotFound("No organisation with that ODS code is in the directory.")
    return organisation


def kind_of(*, session: Session, ods_code: str) -> OrgKind | None:
    """The kind of the organisation with this ODS code (None: not in the directory)."""
    code = ods_code.upper()
    if not validation.ods_code_is_valid(code):  # as get_organisation
        return None
    rows = raw.fetch(session, _KIND, {"code": code})
    return OrgKind(rows[0][0]) if rows else None


def find_pharmacy_by_service_id(*, session: Session, service_id: str) -> tuple[str, Service] | None:
    """The pharmacy (ODS code) and service a directory service id names."""
    if not (service_id.isascii() and service_id.isdigit() and len(service_id) <= 20):
        return None
    rows = raw.fetch(session, _BY_SERVICE_ID, {"service_id": service_id})
    return (rows[0][0], Service(rows[0][1])) if rows else None


_ORGANISATION = Organisation.__table__  # type: ignore[attr-defined]
_PHARMACY_SERVICE = PharmacyService.__table__  # type: ignore[attr-defined]
_KIND = raw.Statement(
    core_select(_ORGANISATION.c.kind).where(_ORGANISATION.c.ods_code == bindparam("code"))
)
_BY_SERVICE_ID = raw.Statement(
    core_select(_PHARMACY_SERVICE.c.pharmacy_ods, _PHARMACY_SERVICE.c.service).where(
        _PHARMACY_SERVICE.c.service_id == bindparam("service_id")
    )
)


def pharmacy_provides(*, session: Session, pharmacy_ods: str, service: Service) -> bool:
    return session.get(PharmacyService, (pharmacy_ods, service)) is not None


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """What intake needs to know of an organisation."""

    ods_code: str
    kind: OrgKind
    active: bool
    provides: bool  # a pharmacy registered for the service asked about


@dataclass(frozen=True, slots=True)
class IntakeDirectory:
    caller: DirectoryEntry | None  # None: not in the directory
    pharmacy: DirectoryEntry | None


# Built once. (The placement of the patient's practice, which the intake's rollup counts need, is
# a statement of its own: joined into this one, the planner scanned every table it touches.)
_INTAKE_DIRECTORY = raw.Statement(
    core_select(
        _ORGANISATION.c.ods_code,
        _ORGANISATION.c.kind,
        _ORGANISATION.c.active,
        exists().where(
            _PHARMACY_SERVICE.c.pharmacy_ods == _ORGANISATION.c.ods_code,
            _PHARMACY_SERVICE.c.service == bindparam("service"),
        ),
    ).where(_ORGANISATION.c.ods_code.in_([bindparam("caller"), bindparam("pharmacy")]))
)


def intake_directory(
    *, session: Session, caller_ods: str, pharmacy_ods: str, service: Service
) -> IntakeDirectory:
    """The caller's organisation and the receiving pharmacy, with whether the pharmacy is
    registered for `service`: the directory reads of one intake, in one statement (the same
    answers as get_organisation for each and pharmacy_provides)."""
    caller, pharmacy = caller_ods.upper(), pharmacy_ods.upper()
    found: dict[str, DirectoryEntry] = {}
    # As get_organisation: only what can be an ODS code is looked up ("" matches no row).
    params = {
        "caller": caller if validation.ods_code_is_valid(caller) else "",
        "pharmacy": pharmacy if validation.ods_code_is_valid(pharmacy) else "",
        "service": service,
    }
    if params["caller"] or params["pharmacy"]:
        for code, kind, active, registered in raw.fetch(session, _INTAKE_DIRECTORY, params):
            found[code] = DirectoryEntry(
                ods_code=code, kind=OrgKind(kind), active=bool(active), provides=bool(registered)
            )
    return IntakeDirectory(caller=found.get(caller), pharmacy=found.get(pharmacy))


def _in_force(on: date) -> ColumnElement[bool]:
    return and_(
        col(Membership.start_date) <= on,
        or_(col(Membership.end_date).is_(None), col(Membership.end_date) >= on),
    )


def group_of(*, session: Session, member_ods: str, on: date) -> str | None:
    """The PCN of a practice (or the place of a PCN) in force on a date."""
    return session.exec(
        select(Membership.group_ods).where(Membership.member_ods == member_ods, _in_force(on))
    ).first()


def list_size_on(*, session: Session, practice_ods: str, on: date) -> int | None:
    return session.exec(
        select(ListSize.registered_patients)
        .where(ListSize.practice_ods == practice_ods, col(ListSize.effective_date) <= on)
        .order_by(col(ListSize.effective_date).desc())
    ).first()


def to_public(*, session: Session, organisation: Organisation, on: date) -> OrganisationPublic:
    public = OrganisationPublic.model_validate(organisation, from_attributes=True)
    if organisation.kind is OrgKind.GP_PRACTICE:
        public.pcn = group_of(session=session, member_ods=organisation.ods_code, on=on)
        public.registered_patients = list_size_on(
            session=session, practice_ods=organisation.ods_code, on=on
        )
    if organisation.kind is OrgKind.PCN:
        public.place = group_of(session=session, member_ods=organisation.ods_code, on=on)
    if organisation.kind is OrgKind.PHARMACY:
        services = session.exec(
            select(PharmacyService)
            .where(PharmacyService.pharmacy_ods == organisation.ods_code)
            .order_by(col(PharmacyService.service))
        ).all()
        public.services = [
            ServicePublic(service=s.service, service_id=s.service_id) for s in services
        ]
    return public


def list_organisations(
    *,
    session: Session,
    kind: OrgKind | None,
    service: Service | None,
    pcn: str | None,
    after: str | None,
    limit: int,
    on: date,
) -> OrganisationsPublic:
    """Organisations ordered by ODS code, filtered, with keyset paging on the code."""
    query = select(Organisation)
    if kind is not None:
        query = query.where(Organisation.kind == kind)
    if service is not None:
        query = query.where(
            col(Organisation.ods_code).in_(
                select(PharmacyService.pharmacy_ods).where(PharmacyService.service == service)
            )
        )
    if pcn is not None:
        query = query.where(
            col(Organisation.ods_code).in_(
                select(Membership.member_ods).where(
                    Membership.group_ods == pcn.upper(), _in_force(on)
                )
            )
        )
    if after is not None:
        query = query.where(col(Organisation.ods_code) > after)
    rows: Sequence[Organisation] = session.exec(
        query.order_by(col(Organisation.ods_code)).limit(limit + 1)
    ).all()
    page = list(rows[:limit])
    return OrganisationsPublic(
        data=[to_public(session=session, organisation=o, on=on) for o in page],
        count=len(page),
        next_cursor=page[-1].ods_code if len(rows) > limit else None,
    )
