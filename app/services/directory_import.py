"""Import the organisation directory from a folder of CSV files.

Each file is UTF-8 with a header row naming exactly the columns below (in any order). Only
`organisations.csv` is required. A blank cell means "none"; dates are ISO (`YYYY-MM-DD`).

`organisations.csv`: one row per organisation.

| Column | Required | Meaning |
| --- | --- | --- |
| `ods_code` | yes | ODS code: 3 to 10 upper-case letters and digits, once per file |
| `kind` | yes | `gp-practice`, `pharmacy`, `pcn`, `trust`, `nhs111`, `icb` or `place` |
| `name` | yes | up to 200 characters |
| `postcode` | no | up to 10 characters |

`memberships.csv`: a practice in a PCN, a PCN in a place, a place in an ICB, over a date range.

| Column | Required | Meaning |
| --- | --- | --- |
| `member_ods` | yes | a `gp-practice`, `pcn` or `place` |
| `group_ods` | yes | its group: a `pcn` for a practice, a `place` for a PCN, an `icb` for a place |
| `start_date` | yes | first day of the membership |
| `end_date` | no | last day of the membership (inclusive); blank while it lasts |

A member's date ranges must not overlap: a practice that moves PCN has one row per PCN, the
first ending the day before the second starts.

`list_sizes.csv`: registered patients of a practice from an effective date.

| Column | Required | Meaning |
| --- | --- | --- |
| `practice_ods` | yes | a `gp-practice` |
| `effective_date` | yes | the day from which the count applies |
| `registered_patients` | yes | a whole number, 0 or more |

`pharmacy_services.csv`: the services a pharmacy is registered to provide.

| Column | Required | Meaning |
| --- | --- | --- |
| `pharmacy_ods` | yes | a `pharmacy` |
| `service` | yes | `pharmacy-first`, `blood-pressure`, `contraception` or `dms` |
| `service_id` | no | directory (DoS) service id: up to 20 digits, unique across all pharmacies |
| `start_date` | no | the day the pharmacy started providing the service |

The files may name organisations already in the database as well as those in
`organisations.csv`. Rows are upserted by key (organisation by `ods_code`; membership by
`member_ods`, `group_ods`, `start_date`; list size by `practice_ods`, `effective_date`; pharmacy
service by `pharmacy_ods`, `service`), so importing the same files twice changes nothing, and
rows the files do not mention are left alone. Every row is checked before anything is written:
any error raises `DirectoryImportError` listing every problem as
`<file> line <n>, column <column>: <problem>`, and nothing is written.
"""

import csv
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, select

from app.core.errors import Issue, ValidationFailed
from app.db.base import utc_now
from app.models.enums import OrgKind, Service
from app.models.organisation import ListSize, Membership, Organisation, PharmacyService
from app.services.validation import ods_code_is_valid

ORGANISATIONS = "organisations.csv"
MEMBERSHIPS = "memberships.csv"
LIST_SIZES = "list_sizes.csv"
PHARMACY_SERVICES = "pharmacy_services.csv"

COLUMNS: dict[str, tuple[str, ...]] = {
    ORGANISATIONS: ("ods_code", "kind", "name", "postcode"),
    MEMBERSHIPS: ("member_ods", "group_ods", "start_date", "end_date"),
    LIST_SIZES: ("practice_ods", "effective_date", "registered_patients"),
    PHARMACY_SERVICES: ("pharmacy_ods", "service", "service_id", "start_date"),
}

_GROUP_KIND = {
    OrgKind.GP_PRACTICE: OrgKind.PCN,
    OrgKind.PCN: OrgKind.PLACE,
    OrgKind.PLACE: OrgKind.ICB,
}
_WHOLE_NUMBER = re.compile(r"^[0-9]+$")
_SERVICE_ID = re.compile(r"^[0-9]{1,20}$")

E = TypeVar("E", bound=StrEnum)
K = TypeVar("K")
M = TypeVar("M", bound=SQLModel)


class ImportSummary(BaseModel):
    """Rows read from each file (0 for a file that is absent)."""

    organisations: int = 0
    memberships: int = 0
    list_sizes: int = 0
    pharmacy_services: int = 0


class DirectoryImportError(ValidationFailed):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(
            detail=f"The directory files have {len(errors)} error(s); nothing was imported.",
            issues=[Issue(code="invalid", diagnostics=error) for error in errors],
        )


@dataclass
class _Row:
    """One CSV record; parse methods record an error and return None when a cell is invalid."""

    file: str
    line: int
    cells: dict[str, str]
    errors: list[str]
    _errors_before: int = field(init=False)

    def __post_init__(self) -> None:
        self._errors_before = len(self.errors)

    @property
    def valid(self) -> bool:
        return len(self.errors) == self._errors_before

    def error(self, column: str, problem: str) -> None:
        self.errors.append(f"{self.file} line {self.line}, column {column}: {problem}")

    def text(self, column: str, *, max_length: int, required: bool) -> str | None:
        value = self.cells[column]
        if not value:
            if required:
                self.error(column, "is required")
            return None
        if len(value) > max_length:
            self.error(column, f"is longer than {max_length} characters")
            return None
        return value

    def ods(self, column: str) -> str | None:
        value = self.cells[column]
        if not ods_code_is_valid(value):
            self.error(
                column, f"{value!r} is not an ODS code (3 to 10 upper-case letters and digits)"
            )
            return None
        return value

    def choice(self, column: str, enum: type[E]) -> E | None:
        try:
            return enum(self.cells[column])
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            self.error(column, f"{self.cells[column]!r} is not one of {allowed}")
            return None

    def iso_date(self, column: str, *, required: bool) -> date | None:
        value = self.cells[column]
        if not value and not required:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.error(column, f"{value!r} is not an ISO date (YYYY-MM-DD)")
            return None

    def whole_number(self, column: str) -> int | None:
        value = self.cells[column]
        if not _WHOLE_NUMBER.match(value):
            self.error(column, f"{value!r} is not a whole number, 0 or more")
            return None
        return int(value)


def _read(directory: Path, file: str, errors: list[str]) -> list[_Row]:
    path = directory / file
    if not path.is_file():
        if file == ORGANISATIONS:
            errors.append(f"{file}: not found in {directory}")
        return []
    columns = COLUMNS[file]
    rows: list[_Row] = []
    # utf-8-sig because spreadsheet exports often start with a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            header = list(reader.fieldnames or [])
            problems = [(c, "is missing from the header") for c in columns if c not in header]
            problems += [(c, "is not a known column") for c in header if c not in columns]
            problems += [
                (c, "appears twice in the header") for c in set(header) if header.count(c) > 1
            ]
            for column, problem in problems:
                errors.append(f"{file} line 1, column {column}: {problem}")
            if problems:
                return []
            for record in reader:
                cells = {column: (record[column] or "").strip() for column in columns}
                row = _Row(file, reader.line_num, cells, errors)
                if None in record:
                    row.error(str(len(columns) + 1), "the row has more fields than the header")
                missing = [column for column in columns if record[column] is None]
                if missing:
                    row.error(missing[0], "the row has fewer fields than the header")
                if row.valid:
                    rows.append(row)
        except (UnicodeDecodeError, csv.Error) as error:
            problem = "is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else str(error)
            errors.append(f"{file} line {reader.line_num + 1}, column -: {problem}")
            return []
    return rows


def _first_line(
    seen: dict[tuple[object, ...], int], key: tuple[object, ...], row: _Row
) -> int | None:
    """The line that already used `key` in this file, or None (recording this row's line)."""
    if key in seen:
        return seen[key]
    seen[key] = row.line
    return None


def _parse_organisations(rows: list[_Row]) -> dict[str, Organisation]:
    parsed: dict[str, Organisation] = {}
    seen: dict[tuple[object, ...], int] = {}
    for row in rows:
        ods_code = row.ods("ods_code")
        kind = row.choice("kind", OrgKind)
        name = row.text("name", max_length=200, required=True)
        postcode = row.text("postcode", max_length=10, required=False)
        if ods_code is not None and (first := _first_line(seen, (ods_code,), row)) is not None:
            row.error("ods_code", f"{ods_code} is already on line {first}")
        if row.valid and ods_code is not None and kind is not None and name is not None:
            parsed[ods_code] = Organisation(
                ods_code=ods_code, kind=kind, name=name, postcode=postcode
            )
    return parsed


def _known_org(
    row: _Row, column: str, kinds: dict[str, OrgKind], *, expected: OrgKind | None
) -> OrgKind | None:
    ods_code = row.ods(column)
    if ods_code is None:
        return None
    kind = kinds.get(ods_code)
    if kind is None:
        row.error(column, f"{ods_code} is neither in {ORGANISATIONS} nor in the directory")
    elif expected is not None and kind is not expected:
        row.error(column, f"{ods_code} is a {kind.value}, not a {expected.value}")
        return None
    return kind


def _parse_memberships(
    rows: list[_Row], *, kinds: dict[str, OrgKind], existing: Iterable[Membership]
) -> dict[tuple[str, str, date], Membership]:
    parsed: dict[tuple[str, str, date], Membership] = {}
    lines: dict[tuple[str, str, date], int] = {}
    for row in rows:
        member_kind = _known_org(row, "member_ods", kinds, expected=None)
        group_kind = _known_org(row, "group_ods", kinds, expected=None)
        start = row.iso_date("start_date", required=True)
        end = row.iso_date("end_date", required=False)
        if member_kind is not None and member_kind not in _GROUP_KIND:
            row.error("member_ods", f"a {member_kind.value} cannot be a member of a group")
        elif (
            member_kind is not None
            and group_kind is not None
            and group_kind is not _GROUP_KIND[member_kind]
        ):
            expected = _GROUP_KIND[member_kind].value
            row.error(
                "group_ods",
                f"a {member_kind.value} belongs to a {expected}, not a {group_kind.value}",
            )
        if start is not None and end is not None and end < start:
            row.error("end_date", "is before start_date")
        if start is None:
            continue
        member_ods, group_ods = row.cells["member_ods"], row.cells["group_ods"]
        key = (member_ods, group_ods, start)
        if key in lines:
            row.error("start_date", f"the same membership is already on line {lines[key]}")
        if row.valid:
            parsed[key] = Membership(
                member_ods=member_ods, group_ods=group_ods, start_date=start, end_date=end
            )
            lines[key] = row.line
    _check_overlaps(parsed, lines, existing=existing, rows_by_line={row.line: row for row in rows})
    return parsed


def _check_overlaps(
    parsed: dict[tuple[str, str, date], Membership],
    lines: dict[tuple[str, str, date], int],
    *,
    existing: Iterable[Membership],
    rows_by_line: dict[int, _Row],
) -> None:
    """Reject a member's ranges that overlap, once the file's rows are laid over the database's."""
    by_member: dict[str, dict[tuple[str, date], Membership]] = defaultdict(dict)
    for membership in existing:
        by_member[membership.member_ods][(membership.group_ods, membership.start_date)] = membership
    for (member_ods, group_ods, start), membership in parsed.items():
        by_member[member_ods][(group_ods, start)] = membership
    for memberships in by_member.values():
        ordered = sorted(memberships.values(), key=lambda m: m.start_date)
        latest = ordered[0]
        for membership in ordered[1:]:
            if latest.end_date is None or latest.end_date >= membership.start_date:
                _report_overlap((membership, latest), lines, rows_by_line)
            if latest.end_date is not None and (
                membership.end_date is None or membership.end_date > latest.end_date
            ):
                latest = membership


def _report_overlap(
    pair: tuple[Membership, Membership],
    lines: dict[tuple[str, str, date], int],
    rows_by_line: dict[int, _Row],
) -> None:
    """Blame the later line of the two; a row only in the database has no line (0)."""

    def line_of(membership: Membership) -> int:
        return lines.get((membership.member_ods, membership.group_ods, membership.start_date), 0)

    reported, other = sorted(pair, key=line_of, reverse=True)
    if not line_of(reported):
        return
    where = f"line {line_of(other)}" if line_of(other) else "the directory"
    described = f"{other.member_ods} in {other.group_ods} from {other.start_date} ({where})"
    rows_by_line[line_of(reported)].error("start_date", f"overlaps the membership of {described}")


def _parse_list_sizes(
    rows: list[_Row], *, kinds: dict[str, OrgKind]
) -> dict[tuple[str, date], ListSize]:
    parsed: dict[tuple[str, date], ListSize] = {}
    seen: dict[tuple[object, ...], int] = {}
    for row in rows:
        _known_org(row, "practice_ods", kinds, expected=OrgKind.GP_PRACTICE)
        effective = row.iso_date("effective_date", required=True)
        patients = row.whole_number("registered_patients")
        practice_ods = row.cells["practice_ods"]
        if (
            effective is not None
            and (first := _first_line(seen, (practice_ods, effective), row)) is not None
        ):
            row.error(
                "effective_date",
                f"{practice_ods} already has a list size for {effective} on line {first}",
            )
        if row.valid and effective is not None and patients is not None:
            parsed[(practice_ods, effective)] = ListSize(
                practice_ods=practice_ods, effective_date=effective, registered_patients=patients
            )
    return parsed


def _parse_pharmacy_services(
    rows: list[_Row], *, kinds: dict[str, OrgKind], existing: Iterable[PharmacyService]
) -> dict[tuple[str, Service], PharmacyService]:
    parsed: dict[tuple[str, Service], PharmacyService] = {}
    seen: dict[tuple[object, ...], int] = {}
    for row in rows:
        _known_org(row, "pharmacy_ods", kinds, expected=OrgKind.PHARMACY)
        service = row.choice("service", Service)
        service_id = row.text("service_id", max_length=20, required=False)
        start = row.iso_date("start_date", required=False)
        if service_id is not None and not _SERVICE_ID.match(service_id):
            row.error("service_id", f"{service_id!r} is not a numeric service id")
        pharmacy_ods = row.cells["pharmacy_ods"]
        if (
            service is not None
            and (first := _first_line(seen, (pharmacy_ods, service), row)) is not None
        ):
            row.error(
                "service",
                f"{pharmacy_ods} is already registered for {service.value} on line {first}",
            )
        if service_id is not None and (first := _first_line(seen, (service_id,), row)) is not None:
            row.error("service_id", f"{service_id} is already used on line {first}")
        if row.valid and service is not None:
            parsed[(pharmacy_ods, service)] = PharmacyService(
                pharmacy_ods=pharmacy_ods, service=service, service_id=service_id, start_date=start
            )
    # The file's rows replace the database's rows with the same key, so only the others can clash.
    taken = {
        s.service_id: s
        for s in existing
        if s.service_id is not None and (s.pharmacy_ods, s.service) not in parsed
    }
    for row in rows:
        owner = taken.get(row.cells["service_id"])
        if owner is not None and (owner.pharmacy_ods, owner.service) != (
            row.cells["pharmacy_ods"],
            row.cells["service"],
        ):
            row.error(
                "service_id",
                f"{owner.service_id} is already the id of {owner.pharmacy_ods} {owner.service} in the directory",
            )
    return parsed


def _upsert(
    session: Session, rows: Mapping[K, M], existing: Mapping[K, M], fields: tuple[str, ...]
) -> set[K]:
    """Add new rows and copy `fields` onto existing ones; return the keys of rows that changed."""
    changed: set[K] = set()
    for key, row in rows.items():
        current = existing.get(key)
        if current is None:
            session.add(row)
            continue
        for name in fields:
            if getattr(current, name) != getattr(row, name):
                setattr(current, name, getattr(row, name))
                changed.add(key)
    return changed


def import_directory(*, session: Session, directory: Path) -> ImportSummary:
    """Validate every row of the directory files, then upsert them all in one transaction."""
    errors: list[str] = []
    existing_orgs = {o.ods_code: o for o in session.exec(select(Organisation))}
    existing_memberships = list(session.exec(select(Membership)))
    existing_services = list(session.exec(select(PharmacyService)))

    organisations = _parse_organisations(_read(directory, ORGANISATIONS, errors))
    kinds = {ods: OrgKind(o.kind) for ods, o in existing_orgs.items()}
    kinds.update({ods: o.kind for ods, o in organisations.items()})
    memberships = _parse_memberships(
        _read(directory, MEMBERSHIPS, errors), kinds=kinds, existing=existing_memberships
    )
    list_sizes = _parse_list_sizes(_read(directory, LIST_SIZES, errors), kinds=kinds)
    services = _parse_pharmacy_services(
        _read(directory, PHARMACY_SERVICES, errors), kinds=kinds, existing=existing_services
    )
    if errors:
        raise DirectoryImportError(errors)

    try:
        now = utc_now()
        for ods_code in _upsert(
            session, organisations, existing_orgs, ("kind", "name", "postcode")
        ):
            existing_orgs[ods_code].updated_at = now
        # Memberships, list sizes and services reference organisations by foreign key, and
        # without relationship() the unit of work does not order the inserts for us.
        session.flush()
        _upsert(
            session,
            memberships,
            {(m.member_ods, m.group_ods, m.start_date): m for m in existing_memberships},
            ("end_date",),
        )
        _upsert(
            session,
            list_sizes,
            {(ls.practice_ods, ls.effective_date): ls for ls in session.exec(select(ListSize))},
            ("registered_patients",),
        )
        _upsert(
            session,
            services,
            {(s.pharmacy_ods, Service(s.service)): s for s in existing_services},
            ("service_id", "start_date"),
        )
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        raise
    return ImportSummary(
        organisations=len(organisations),
        memberships=len(memberships),
        list_sizes=len(list_sizes),
        pharmacy_services=len(services),
    )
