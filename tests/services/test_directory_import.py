import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import delete, func
from sqlmodel import Session, SQLModel, col, select

from app.models.enums import OrgKind, Service
from app.models.organisation import ListSize, Membership, Organisation, PharmacyService
from app.services.demo_directory import demo_directory_path, write_demo_directory
from app.services.directory_import import DirectoryImportError, ImportSummary, import_directory

SMALL_DIRECTORY = {
    "organisations.csv": [
        "ods_code,kind,name,postcode",
        "QXX,icb,Example ICB,ZZ1 1AA",
        "QXX01,place,North Place,",
        "U00001,pcn,Riverside PCN,",
        "U00002,pcn,Hillview PCN,",
        "A81001,gp-practice,Oak Lane Surgery,ZZ1 2AB",
        "A81002,gp-practice,Mill Road Surgery,ZZ1 3AB",
        "FA001,pharmacy,Elm Street Pharmacy,ZZ2 1AA",
    ],
    "memberships.csv": [
        "member_ods,group_ods,start_date,end_date",
        "QXX01,QXX,2022-07-01,",
        "U00001,QXX01,2022-07-01,",
        "U00002,QXX01,2022-07-01,",
        "A81001,U00001,2019-07-01,2025-03-31",
        "A81001,U00002,2025-04-01,",
    ],
    "list_sizes.csv": [
        "practice_ods,effective_date,registered_patients",
        "A81001,2026-01-01,9000",
        "A81002,2026-01-01,4000",
    ],
    "pharmacy_services.csv": [
        "pharmacy_ods,service,service_id,start_date",
        "FA001,pharmacy-first,2000011001,2024-01-31",
        "FA001,dms,2000011004,",
    ],
}


@pytest.fixture(autouse=True)
def empty_directory(session: Session) -> None:
    """These tests import into an empty directory; the deletes roll back with the test."""
    for table in (PharmacyService, ListSize, Membership, Organisation):
        session.exec(delete(table))
    session.flush()


def write_directory(directory: Path, files: dict[str, list[str]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for file, lines in files.items():
        (directory / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def with_rows(file: str, *rows: str) -> dict[str, list[str]]:
    return SMALL_DIRECTORY | {file: SMALL_DIRECTORY[file] + list(rows)}


def count(session: Session, table: type[SQLModel]) -> int:
    return session.exec(select(func.count()).select_from(table)).one()


def row_counts(session: Session) -> dict[str, int]:
    tables: list[type[SQLModel]] = [Organisation, Membership, ListSize, PharmacyService]
    return {table.__name__: count(session, table) for table in tables}


def import_errors(session: Session, directory: Path) -> list[str]:
    with pytest.raises(DirectoryImportError) as caught:
        import_directory(session=session, directory=directory)
    return caught.value.errors


def test_import_directory_demo_dataset_has_the_shape_of_an_icb(session: Session) -> None:
    started = time.perf_counter()
    summary = import_directory(session=session, directory=demo_directory_path())
    elapsed = time.perf_counter() - started

    assert elapsed < 5
    kinds = dict(
        session.exec(select(Organisation.kind, func.count()).group_by(Organisation.kind)).all()
    )
    assert kinds[OrgKind.ICB] == 1
    assert kinds[OrgKind.PLACE] == 3
    assert kinds[OrgKind.PCN] == 35
    assert 125 <= kinds[OrgKind.GP_PRACTICE] <= 135
    assert 270 <= kinds[OrgKind.PHARMACY] <= 290
    assert summary.organisations == sum(kinds.values())
    assert summary.list_sizes == count(session, ListSize)
    latest: dict[str, tuple[date, int]] = {}
    for size in session.exec(select(ListSize)):
        if size.practice_ods not in latest or latest[size.practice_ods][0] < size.effective_date:
            latest[size.practice_ods] = (size.effective_date, size.registered_patients)
    assert 1_500_000 <= sum(patients for _, patients in latest.values()) <= 1_700_000
    assert all(2_000 <= patients <= 35_000 for _, patients in latest.values())


def test_import_directory_demo_dataset_has_the_fixed_codes(session: Session) -> None:
    import_directory(session=session, directory=demo_directory_path())

    def current_group(member_ods: str) -> str:
        return session.exec(
            select(Membership.group_ods).where(
                Membership.member_ods == member_ods,
                col(Membership.end_date).is_(None),
            )
        ).one()

    def services(pharmacy_ods: str) -> dict[str, str | None]:
        rows = session.exec(
            select(PharmacyService).where(PharmacyService.pharmacy_ods == pharmacy_ods)
        )
        return {row.service: row.service_id for row in rows}

    expected_kinds = {
        "QXX": OrgKind.ICB,
        "QXX01": OrgKind.PLACE,
        "U00001": OrgKind.PCN,
        "A81001": OrgKind.GP_PRACTICE,
        "A81002": OrgKind.GP_PRACTICE,
        "FA001": OrgKind.PHARMACY,
        "FA002": OrgKind.PHARMACY,
        "RX1": OrgKind.TRUST,
        "NHS11": OrgKind.NHS111,
    }
    for ods_code, kind in expected_kinds.items():
        organisation = session.get(Organisation, ods_code)
        assert organisation is not None, ods_code
        assert organisation.kind == kind
    assert session.get_one(Organisation, "A81001").name == "Oak Lane Surgery"
    assert session.get_one(Organisation, "FA001").name == "Elm Street Pharmacy"
    assert current_group("A81001") == "U00001"
    assert current_group("A81002") == "U00001"
    assert current_group("U00001") == "QXX01"
    assert current_group("QXX01") == "QXX"
    assert count(session, ListSize) > 0
    assert session.exec(select(ListSize).where(ListSize.practice_ods == "A81001")).first()
    assert services("FA001") == {
        Service.PHARMACY_FIRST: "2000011001",
        Service.BLOOD_PRESSURE: "2000011002",
        Service.CONTRACEPTION: "2000011003",
        Service.DMS: "2000011004",
    }
    assert set(services("FA002")) == {Service.PHARMACY_FIRST, Service.DMS}


def test_import_directory_demo_dataset_has_practices_that_moved_pcn(session: Session) -> None:
    import_directory(session=session, directory=demo_directory_path())

    moved = session.exec(
        select(Membership.member_ods).group_by(Membership.member_ods).having(func.count() == 2)
    ).all()

    assert 2 <= len(moved) <= 3


def test_import_directory_twice_leaves_the_same_rows(session: Session) -> None:
    first = import_directory(session=session, directory=demo_directory_path())
    counts = row_counts(session)

    second = import_directory(session=session, directory=demo_directory_path())

    assert second == first
    assert row_counts(session) == counts


def test_import_directory_again_updates_changed_rows(session: Session, tmp_path: Path) -> None:
    import_directory(session=session, directory=write_directory(tmp_path / "v1", SMALL_DIRECTORY))
    changed = SMALL_DIRECTORY | {
        "organisations.csv": [
            line.replace("Oak Lane Surgery", "Oak Lane Medical Centre")
            for line in SMALL_DIRECTORY["organisations.csv"]
        ],
        "list_sizes.csv": [
            "practice_ods,effective_date,registered_patients",
            "A81001,2026-01-01,9100",
        ],
    }

    import_directory(session=session, directory=write_directory(tmp_path / "v2", changed))

    assert session.get_one(Organisation, "A81001").name == "Oak Lane Medical Centre"
    assert session.get_one(ListSize, ("A81001", date(2026, 1, 1))).registered_patients == 9100
    assert session.get_one(ListSize, ("A81002", date(2026, 1, 1))).registered_patients == 4000
    assert count(session, Organisation) == 7


def test_import_directory_only_organisations_file(session: Session, tmp_path: Path) -> None:
    files = {"organisations.csv": SMALL_DIRECTORY["organisations.csv"]}

    summary = import_directory(session=session, directory=write_directory(tmp_path, files))

    assert summary == ImportSummary(organisations=7)


def test_import_directory_without_organisations_file_is_an_error(
    session: Session, tmp_path: Path
) -> None:
    files = {"list_sizes.csv": SMALL_DIRECTORY["list_sizes.csv"]}

    errors = import_errors(session, write_directory(tmp_path, files))

    assert errors[0].startswith("organisations.csv: not found")


@pytest.mark.parametrize(
    ("file", "bad_row", "expected"),
    [
        pytest.param(
            "organisations.csv",
            "a81x,gp-practice,Lower Case Surgery,",
            "organisations.csv line 9, column ods_code: 'a81x' is not an ODS code",
            id="bad-ods",
        ),
        pytest.param(
            "organisations.csv",
            "A81003,surgery,Park Surgery,",
            "organisations.csv line 9, column kind: 'surgery' is not one of",
            id="bad-kind",
        ),
        pytest.param(
            "organisations.csv",
            "A81001,gp-practice,Oak Lane Surgery,",
            "organisations.csv line 9, column ods_code: A81001 is already on line 6",
            id="duplicate-organisation",
        ),
        pytest.param(
            "organisations.csv",
            "A81003,gp-practice,,",
            "organisations.csv line 9, column name: is required",
            id="missing-name",
        ),
        pytest.param(
            "memberships.csv",
            "A81999,U00001,2024-01-01,",
            "memberships.csv line 7, column member_ods: A81999 is neither in organisations.csv nor",
            id="unknown-member",
        ),
        pytest.param(
            "memberships.csv",
            "A81002,QXX01,2024-01-01,",
            "memberships.csv line 7, column group_ods: a gp-practice belongs to a pcn, not a place",
            id="practice-in-place",
        ),
        pytest.param(
            "memberships.csv",
            "FA001,U00001,2024-01-01,",
            "memberships.csv line 7, column member_ods: a pharmacy cannot be a member of a group",
            id="pharmacy-in-pcn",
        ),
        pytest.param(
            "memberships.csv",
            "A81001,U00002,2025-01-01,2025-02-28",
            "memberships.csv line 7, column start_date: overlaps the membership of A81001 in U00001 from 2019-07-01 (line 5)",
            id="overlapping-memberships",
        ),
        pytest.param(
            "memberships.csv",
            "A81002,U00001,2024-01-01,2023-12-31",
            "memberships.csv line 7, column end_date: is before start_date",
            id="end-before-start",
        ),
        pytest.param(
            "memberships.csv",
            "A81002,U00001,2024-02-30,",
            "memberships.csv line 7, column start_date: '2024-02-30' is not an ISO date",
            id="bad-date",
        ),
        pytest.param(
            "list_sizes.csv",
            "A81001,2026-04-01,-5",
            "list_sizes.csv line 4, column registered_patients: '-5' is not a whole number",
            id="negative-list-size",
        ),
        pytest.param(
            "list_sizes.csv",
            "FA001,2026-04-01,5",
            "list_sizes.csv line 4, column practice_ods: FA001 is a pharmacy, not a gp-practice",
            id="list-size-for-pharmacy",
        ),
        pytest.param(
            "list_sizes.csv",
            "A81001,2026-01-01,9001",
            "list_sizes.csv line 4, column effective_date: A81001 already has a list size for 2026-01-01 on line 2",
            id="duplicate-list-size",
        ),
        pytest.param(
            "pharmacy_services.csv",
            "A81001,dms,,",
            "pharmacy_services.csv line 4, column pharmacy_ods: A81001 is a gp-practice, not a pharmacy",
            id="service-for-practice",
        ),
        pytest.param(
            "pharmacy_services.csv",
            "FA001,contraception,2000011001,",
            "pharmacy_services.csv line 4, column service_id: 2000011001 is already used on line 2",
            id="duplicate-service-id",
        ),
        pytest.param(
            "pharmacy_services.csv",
            "FA001,contraception,DOS-1,",
            "pharmacy_services.csv line 4, column service_id: 'DOS-1' is not a numeric service id",
            id="non-numeric-service-id",
        ),
        pytest.param(
            "pharmacy_services.csv",
            "FA001,flu,,",
            "pharmacy_services.csv line 4, column service: 'flu' is not one of pharmacy-first,",
            id="bad-service",
        ),
        pytest.param(
            "pharmacy_services.csv",
            "FA001,contraception,,2024-1-5",
            "pharmacy_services.csv line 4, column start_date: '2024-1-5' is not an ISO date",
            id="bad-optional-date",
        ),
        pytest.param(
            "pharmacy_services.csv",
            "FA001,contraception",
            "pharmacy_services.csv line 4, column service_id: the row has fewer fields than the header",
            id="short-row",
        ),
    ],
)
def test_import_directory_bad_row_names_file_line_column_and_writes_nothing(
    session: Session, tmp_path: Path, file: str, bad_row: str, expected: str
) -> None:
    directory = write_directory(tmp_path, with_rows(file, bad_row))

    errors = import_errors(session, directory)

    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors
    assert row_counts(session) == dict.fromkeys(row_counts(session), 0)


def test_import_directory_overlap_with_two_rows_blames_the_later_row(
    session: Session, tmp_path: Path
) -> None:
    files = with_rows("memberships.csv", "A81001,U00001,2025-03-31,2025-06-30")

    errors = import_errors(session, write_directory(tmp_path, files))

    assert errors == [
        "memberships.csv line 7, column start_date: overlaps the membership of "
        "A81001 in U00001 from 2019-07-01 (line 5)",
        "memberships.csv line 7, column start_date: overlaps the membership of "
        "A81001 in U00002 from 2025-04-01 (line 6)",
    ]


def test_import_directory_reports_every_error_in_every_file(
    session: Session, tmp_path: Path
) -> None:
    files = SMALL_DIRECTORY | {
        "organisations.csv": [*SMALL_DIRECTORY["organisations.csv"], "BAD!,pcn,Bad PCN,"],
        "list_sizes.csv": [*SMALL_DIRECTORY["list_sizes.csv"], "A81001,someday,-1"],
    }

    errors = import_errors(session, write_directory(tmp_path, files))

    assert [error.split(":")[0] for error in errors] == [
        "organisations.csv line 9, column ods_code",
        "list_sizes.csv line 4, column effective_date",
        "list_sizes.csv line 4, column registered_patients",
    ]


def test_import_directory_bad_header_names_the_column(session: Session, tmp_path: Path) -> None:
    files = SMALL_DIRECTORY | {
        "list_sizes.csv": ["practice_ods,effective,registered_patients", "A81001,2026-01-01,1"]
    }

    errors = import_errors(session, write_directory(tmp_path, files))

    assert errors == [
        "list_sizes.csv line 1, column effective_date: is missing from the header",
        "list_sizes.csv line 1, column effective: is not a known column",
    ]


def test_import_directory_membership_overlapping_the_database_is_rejected(
    session: Session, tmp_path: Path
) -> None:
    import_directory(session=session, directory=write_directory(tmp_path / "v1", SMALL_DIRECTORY))
    files = {
        "organisations.csv": ["ods_code,kind,name,postcode"],
        "memberships.csv": [
            "member_ods,group_ods,start_date,end_date",
            "A81001,U00001,2026-01-01,",
        ],
    }

    errors = import_errors(session, write_directory(tmp_path / "v2", files))

    assert errors == [
        "memberships.csv line 2, column start_date: overlaps the membership of "
        "A81001 in U00002 from 2025-04-01 (the directory)"
    ]


def test_import_directory_service_id_used_in_the_database_is_rejected(
    session: Session, tmp_path: Path
) -> None:
    import_directory(session=session, directory=write_directory(tmp_path / "v1", SMALL_DIRECTORY))
    files = {
        "organisations.csv": ["ods_code,kind,name,postcode", "FA002,pharmacy,Mill Pharmacy,"],
        "pharmacy_services.csv": [
            "pharmacy_ods,service,service_id,start_date",
            "FA002,dms,2000011004,",
        ],
    }

    errors = import_errors(session, write_directory(tmp_path / "v2", files))

    assert errors == [
        "pharmacy_services.csv line 2, column service_id: "
        "2000011004 is already the id of FA001 dms in the directory"
    ]
    assert session.get(Organisation, "FA002") is None


def test_import_directory_may_move_a_service_id_between_a_pharmacys_rows(
    session: Session, tmp_path: Path
) -> None:
    import_directory(session=session, directory=write_directory(tmp_path / "v1", SMALL_DIRECTORY))
    files = SMALL_DIRECTORY | {
        "pharmacy_services.csv": [
            "pharmacy_ods,service,service_id,start_date",
            "FA001,pharmacy-first,2000011001,2024-01-31",
            "FA001,dms,,",
            "FA001,contraception,2000011004,",
        ]
    }

    import_directory(session=session, directory=write_directory(tmp_path / "v2", files))

    contraception = session.get_one(PharmacyService, ("FA001", Service.CONTRACEPTION))
    assert contraception.service_id == "2000011004"


def test_write_demo_directory_is_deterministic(tmp_path: Path) -> None:
    write_demo_directory(tmp_path / "a")
    write_demo_directory(tmp_path / "b")

    files = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert files == [
        "list_sizes.csv",
        "memberships.csv",
        "organisations.csv",
        "pharmacy_services.csv",
    ]
    for name in files:
        generated = (tmp_path / "a" / name).read_bytes()
        assert generated == (tmp_path / "b" / name).read_bytes()
        assert generated == (demo_directory_path() / name).read_bytes(), (
            f"regenerate app/demo/{name}"
        )


def test_write_demo_directory_other_seed_differs(tmp_path: Path) -> None:
    write_demo_directory(tmp_path / "a")
    write_demo_directory(tmp_path / "b", seed=1)

    assert (tmp_path / "a" / "list_sizes.csv").read_bytes() != (
        tmp_path / "b" / "list_sizes.csv"
    ).read_bytes()
