"""Consultation summaries as Compositions a GP system can search: GET /fhir/Composition (pure).

Each consultation (and each DMS stage) has a summary: a FHIR R4 document Bundle led by a
Composition (summary.py). Search and read return that Composition on its own: the same id, which
is also the document's id (so the whole document is `GET Bundle/{Composition.id}`), identifier,
status, type, date and title. Outside the document its `urn:uuid` references would resolve to
nothing, so here they are logical references by identifier (the custodian also by
`Organization/{ODS code}`, which this server reads); the sections, and the resources they list,
stay in the document.

| consultation / referral            | Composition                                             |
|------------------------------------|---------------------------------------------------------|
| consultation.id                    | id (= the document Bundle's id)                         |
| recorded_at                        | meta.lastUpdated and date: a summary never changes      |
| service, stage                     | type (summary.SERVICE_TYPE), title                      |
| patient NHS number, name           | subject: Patient by NHS number identifier, display      |
| clinician_name, gphc_number        | author: Practitioner by GPhC number identifier, display |
| pharmacy ODS code, name            | custodian: Organization/{ODS code}, identifier, display |

Searchset entries: fullUrl `{base}/Composition/{id}`, `search.mode` match, and a `related` link
to the document, `{base}/Bundle/{id}`. `total` counts every match, not just the page.

Search parameters (any other parameter, a repeat of a single-valued one, or a bad value: 400):

- `subject:identifier` (or `patient:identifier`) = `https://fhir.nhs.uk/Id/nhs-number|{NHS number}`
  (or the bare NHS number): one patient's summaries. Omitted: every summary the caller may see.
- `_lastUpdated` (repeatable; all must hold): with `gt`, `ge`, `lt` or `le`. An instant (seconds
  and a time zone, e.g. `2026-11-22T10:00:00Z` or `...+00:00`) is an exact point in time; a date
  (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`) is that whole period in UTC, so `gt2026-11-21` starts at
  2026-11-22T00:00Z. With no prefix (or `eq`) only a date is accepted: the summaries of that
  period. An instant without a prefix is refused rather than matched to the microsecond.
- `_count`: 0 to the configured maximum (0 gives only `total`).
- `_cursor`: from a `next` link (keyset: the last entry's recording time and id).
- `_format`: `json`, `application/json` or `application/fhir+json` (JSON is all there is).
"""

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from app.core.errors import BadRequest, Issue
from app.fhir import summary, systems
from app.models.consultation import Consultation
from app.models.referral import Referral
from app.services.validation import nhs_number_is_valid

Json = dict[str, Any]
Comparison = Literal["gt", "ge", "lt", "le"]
Bound = tuple[Comparison, datetime]  # recorded_at <op> instant

SUBJECT_PARAMETERS = ("subject:identifier", "patient:identifier")
SINGLE_PARAMETERS = ("_count", "_cursor", "_format")
PARAMETERS = frozenset({*SUBJECT_PARAMETERS, *SINGLE_PARAMETERS, "_lastUpdated"})
JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
UNSUPPORTED_PREFIXES = frozenset({"ne", "sa", "eb", "ap"})
_COMPARISON: dict[str, Comparison] = {"gt": "gt", "ge": "ge", "lt": "lt", "le": "le"}

_PERIOD = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
# An unencoded "+" in a query string arrives as a space: ...T10:00:00 00:00.
_SPACED_OFFSET = re.compile(r"(.*T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?) (\d{2}:\d{2})")


@dataclass(frozen=True, slots=True)
class CompositionSearch:
    nhs_number: str | None
    recorded: tuple[Bound, ...]
    count: int
    cursor: str | None


class SummaryHead(Protocol):
    """One summary as search finds it (services.summaries.SummaryHead)."""

    @property
    def consultation(self) -> Consultation: ...

    @property
    def referral(self) -> Referral: ...

    @property
    def pharmacy_name(self) -> str: ...


# ---- parameters --------------------------------------------------------------------------------


def _bad(message: str, expression: str, code: str = "invalid") -> BadRequest:
    return BadRequest(message, issues=[Issue(code, message, expression)])


def _nhs_number(name: str, value: str) -> str:
    system, bar, number = value.strip().rpartition("|")
    if bar and systems.ALIASES.get(system, system) != systems.NHS_NUMBER:
        raise _bad(
            f"{name} must be {systems.NHS_NUMBER}|<NHS number>: only NHS numbers are searchable.",
            name,
            "not-supported",
        )
    if "," in number:
        raise _bad(
            f"{name} takes one NHS number: search one patient at a time.", name, "not-supported"
        )
    if not nhs_number_is_valid(number):
        raise _bad(
            f"{name} is not a valid NHS number (10 digits with a modulus 11 check digit).", name
        )
    return number


def _period(match: re.Match[str]) -> tuple[datetime, datetime]:
    """A date's period [start, end) in UTC."""
    year, month, day = (int(part) if part else None for part in match.groups())
    assert year is not None
    if day is not None and month is not None:
        start = datetime(year, month, day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    if month is not None:
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return start, end
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


def last_updated_bounds(value: str, name: str = "_lastUpdated") -> tuple[Bound, ...]:
    """One `_lastUpdated` value as conditions on the recording time (see the module docstring)."""
    prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    if prefix in UNSUPPORTED_PREFIXES:
        raise _bad(
            f"{name} supports the gt, ge, lt, le and eq prefixes.",
            name,
            "not-supported",
        )
    if prefix not in (*_COMPARISON, "eq"):
        raise _bad(f"{name} has an unknown prefix: use gt, ge, lt, le or eq.", name)
    spaced = _SPACED_OFFSET.fullmatch(text)
    if spaced:
        text = f"{spaced[1]}+{spaced[2]}"
    try:
        if _INSTANT.fullmatch(text):
            if prefix == "eq":
                raise _bad(
                    f"{name} with an instant needs gt, ge, lt or le; without a prefix it takes a "
                    "date (YYYY, YYYY-MM or YYYY-MM-DD), meaning that whole period in UTC.",
                    name,
                )
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return ((_COMPARISON[prefix], moment),)
        period = _PERIOD.fullmatch(text)
        if period is None:
            raise ValueError("neither a date nor an instant")
        start, end = _period(period)
    except ValueError as exc:
        raise _bad(
            f"{name} must be a date (YYYY, YYYY-MM, YYYY-MM-DD) or an instant with seconds and "
            "a time zone (e.g. gt2026-11-22T10:00:00Z), after an optional gt, ge, lt or le.",
            name,
        ) from exc
    of_period: dict[str, tuple[Bound, ...]] = {
        "gt": (("ge", end),),
        "ge": (("ge", start),),
        "lt": (("lt", start),),
        "le": (("lt", end),),
        "eq": (("ge", start), ("lt", end)),
    }
    return of_period[prefix]


def _count(value: str, maximum: int) -> int:
    if not value.isdigit() or int(value) > maximum:
        raise _bad(f"_count must be a whole number from 0 to {maximum}.", "_count")
    return int(value)


def parse_search(
    params: Iterable[tuple[str, str]], *, default_count: int, max_count: int
) -> CompositionSearch:
    """The query string of GET /fhir/Composition, checked whole: anything unsupported is a 400."""
    values: dict[str, list[str]] = defaultdict(list)
    for name, value in params:
        values[name].append(value)
    unknown = sorted(set(values) - PARAMETERS)
    if unknown:
        shown = [name[:40] for name in unknown]
        raise BadRequest(
            f"Unsupported search parameter: {', '.join(shown)}. Composition supports "
            f"{', '.join(sorted(PARAMETERS))}.",
            issues=[
                Issue(
                    "not-supported",
                    f"Unsupported search parameter {name}; Composition supports "
                    f"{', '.join(sorted(PARAMETERS))}.",
                    name,
                )
                for name in shown
            ],
        )
    subjects = [(name, v) for name in SUBJECT_PARAMETERS for v in values.get(name, [])]
    given = {"subject:identifier": len(subjects)} | {
        n: len(values.get(n, [])) for n in SINGLE_PARAMETERS
    }
    for name in (name for name, times in given.items() if times > 1):
        raise _bad(f"{name} may be given once.", name)
    for fmt in values.get("_format", []):
        if fmt not in JSON_FORMATS:
            raise _bad(
                "_format must be json: this server serves application/fhir+json only.",
                "_format",
                "not-supported",
            )
    cursor = values["_cursor"][0] if values.get("_cursor") else None
    if cursor is not None and len(cursor) > 200:
        raise _bad("The paging cursor is not valid: use the next link as given.", "_cursor")
    return CompositionSearch(
        nhs_number=_nhs_number(*subjects[0]) if subjects else None,
        recorded=tuple(
            bound
            for value in values.get("_lastUpdated", [])
            for bound in last_updated_bounds(value)
        ),
        count=_count(values["_count"][0], max_count) if values.get("_count") else default_count,
        cursor=cursor,
    )


# ---- resources ---------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def composition_json(*, consultation: Consultation, referral: Referral, pharmacy_name: str) -> Json:
    """The Composition that leads the consultation's summary document, resolvable on its own."""
    recorded = _aware(consultation.recorded_at).isoformat()
    document_id = str(consultation.id)
    title = f"{pharmacy_name} - {summary.service_title(consultation.service, consultation.stage)}"
    system, code, display = summary.SERVICE_TYPE[consultation.service]
    subject: Json = {
        "type": "Patient",
        "display": f"{referral.patient_given_name} {referral.patient_family_name}",
    }
    if referral.patient_nhs_number:
        subject["identifier"] = {"system": systems.NHS_NUMBER, "value": referral.patient_nhs_number}
    return {
        "resourceType": "Composition",
        "id": document_id,
        "meta": {"lastUpdated": recorded},
        "text": summary.narrative(
            [
                f"{title}, recorded {recorded}.",
                f"The whole summary is the document Bundle/{document_id}.",
            ]
        ),
        "identifier": summary.composition_identifier(consultation.id),
        "status": "final",
        "type": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": subject,
        "date": recorded,
        "author": [
            {
                "type": "Practitioner",
                "identifier": {"system": systems.GPHC_NUMBER, "value": consultation.gphc_number},
                "display": consultation.clinician_name,
            }
        ],
        "title": title,
        "custodian": {
            "reference": f"Organization/{referral.pharmacy_ods}",
            "type": "Organization",
            "identifier": {"system": systems.ODS_ORGANISATION, "value": referral.pharmacy_ods},
            "display": pharmacy_name,
        },
    }


def searchset_json(
    heads: Sequence[SummaryHead],
    *,
    total: int,
    base_url: str,
    self_url: str,
    next_url: str | None,
) -> Json:
    """A searchset of summary Compositions; `base_url` is this server's FHIR base."""
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    bundle: Json = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if heads:
        bundle["entry"] = [
            {
                "fullUrl": f"{base_url}/Composition/{head.consultation.id}",
                "link": [
                    {"relation": "related", "url": f"{base_url}/Bundle/{head.consultation.id}"}
                ],
                "resource": composition_json(
                    consultation=head.consultation,
                    referral=head.referral,
                    pharmacy_name=head.pharmacy_name,
                ),
                "search": {"mode": "match"},
            }
            for head in heads
        ]
    return bundle
