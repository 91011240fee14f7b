from datetime import date, timedelta

import pytest

from app.models.enums import ContraceptiveType, Pathway, Service, Sex
from app.services import clinical_rules
from app.services.clinical_rules import RuleBreach

BORN = date(2001, 6, 15)


def birthday(age: int, born: date = BORN) -> date:
    """The day the patient born on `born` turns `age`."""
    return born.replace(year=born.year + age)


def day_before_birthday(age: int, born: date = BORN) -> date:
    return birthday(age, born) - timedelta(days=1)


def breaches(
    *,
    on: date,
    service: Service = Service.PHARMACY_FIRST,
    pathway: Pathway | None = None,
    born: date = BORN,
    sex: Sex = Sex.FEMALE,
    contraceptive: ContraceptiveType | None = None,
    has_blood_pressure: bool = True,
    has_discharge_medicines: bool = True,
) -> list[RuleBreach]:
    return clinical_rules.referral_eligibility(
        service=service,
        pathway=pathway,
        birth_date=born,
        sex=sex,
        contraceptive=contraceptive,
        has_blood_pressure=has_blood_pressure,
        has_discharge_medicines=has_discharge_medicines,
        on=on,
    )


def fields(found: list[RuleBreach]) -> list[str]:
    return [breach.field for breach in found]


# ---- Pharmacy First pathways: the day before and on the birthday that crosses each limit ----

# (pathway, sex, age on the birthday that crosses the limit, eligible before it, eligible on it)
PATHWAY_BOUNDARIES = [
    pytest.param(Pathway.SINUSITIS, Sex.FEMALE, 12, False, True, id="sinusitis-11-12"),
    pytest.param(Pathway.SORE_THROAT, Sex.MALE, 5, False, True, id="sore-throat-4-5"),
    pytest.param(Pathway.ACUTE_OTITIS_MEDIA, Sex.MALE, 1, False, True, id="aom-0-1"),
    pytest.param(Pathway.ACUTE_OTITIS_MEDIA, Sex.FEMALE, 18, True, False, id="aom-17-18"),
    pytest.param(Pathway.INFECTED_INSECT_BITE, Sex.MALE, 1, False, True, id="insect-bite-0-1"),
    pytest.param(Pathway.IMPETIGO, Sex.FEMALE, 1, False, True, id="impetigo-0-1"),
    pytest.param(Pathway.SHINGLES, Sex.MALE, 18, False, True, id="shingles-17-18"),
    pytest.param(Pathway.UNCOMPLICATED_UTI, Sex.FEMALE, 16, False, True, id="uti-15-16"),
    pytest.param(Pathway.UNCOMPLICATED_UTI, Sex.FEMALE, 65, True, False, id="uti-64-65"),
]


@pytest.mark.parametrize(("pathway", "sex", "age", "before", "on_birthday"), PATHWAY_BOUNDARIES)
def test_pathway_age_band_boundary(
    pathway: Pathway, sex: Sex, age: int, before: bool, on_birthday: bool
) -> None:
    day_before = breaches(pathway=pathway, sex=sex, on=day_before_birthday(age))
    on_the_day = breaches(pathway=pathway, sex=sex, on=birthday(age))

    assert (day_before == [], on_the_day == []) == (before, on_birthday)
    refused = day_before or on_the_day
    assert fields(refused) == ["patient"]
    assert str(pathway) in refused[0].message


@pytest.mark.parametrize("age", [16, 30, 64])
def test_uti_pathway_refuses_men_of_any_age(age: int) -> None:
    found = breaches(
        pathway=Pathway.UNCOMPLICATED_UTI, sex=Sex.MALE, on=birthday(age) + timedelta(days=100)
    )

    assert fields(found) == ["patient"]
    assert "women aged 16 to 64" in found[0].message


def test_uti_pathway_accepts_women_in_band() -> None:
    assert breaches(pathway=Pathway.UNCOMPLICATED_UTI, sex=Sex.FEMALE, on=birthday(30)) == []


@pytest.mark.parametrize("sex", [Sex.OTHER, Sex.UNKNOWN])
def test_uti_pathway_needs_sex_female(sex: Sex) -> None:
    assert fields(breaches(pathway=Pathway.UNCOMPLICATED_UTI, sex=sex, on=birthday(30))) == [
        "patient"
    ]


@pytest.mark.parametrize("pathway", [Pathway.MINOR_ILLNESS, None])
@pytest.mark.parametrize("on", [BORN, birthday(1) - timedelta(days=1), birthday(17), birthday(104)])
def test_minor_illness_has_no_age_limit(pathway: Pathway | None, on: date) -> None:
    assert breaches(pathway=pathway, sex=Sex.MALE, on=on) == []


@pytest.mark.parametrize(
    "pathway",
    [
        Pathway.SINUSITIS,
        Pathway.SORE_THROAT,
        Pathway.INFECTED_INSECT_BITE,
        Pathway.IMPETIGO,
        Pathway.SHINGLES,
    ],
)
def test_pathways_without_upper_limit_accept_the_very_old(pathway: Pathway) -> None:
    assert breaches(pathway=pathway, sex=Sex.MALE, on=birthday(95)) == []


def test_every_pathway_has_a_band_entry() -> None:
    assert set(clinical_rules.PATHWAY_BANDS) == set(Pathway)


# ---- Blood Pressure Check Service -----------------------------------------------------------


def test_blood_pressure_refuses_a_17_year_old_on_the_day_before_18th_birthday() -> None:
    found = breaches(service=Service.BLOOD_PRESSURE, on=day_before_birthday(18))

    assert fields(found) == ["patient.birth_date"]
    assert "18 and over" in found[0].message


def test_blood_pressure_accepts_on_18th_birthday() -> None:
    assert breaches(service=Service.BLOOD_PRESSURE, on=birthday(18)) == []


def test_blood_pressure_without_a_reading_is_refused() -> None:
    found = breaches(service=Service.BLOOD_PRESSURE, on=birthday(50), has_blood_pressure=False)

    assert fields(found) == ["blood_pressure"]


def test_blood_pressure_under_age_and_without_reading_reports_both() -> None:
    found = breaches(
        service=Service.BLOOD_PRESSURE, on=day_before_birthday(18), has_blood_pressure=False
    )

    assert fields(found) == ["patient.birth_date", "blood_pressure"]


@pytest.mark.parametrize("service", [Service.PHARMACY_FIRST, Service.CONTRACEPTION, Service.DMS])
def test_other_services_do_not_need_a_reading(service: Service) -> None:
    assert breaches(service=service, on=birthday(30), has_blood_pressure=False) == []


# ---- Pharmacy Contraception Service ---------------------------------------------------------


@pytest.mark.parametrize(
    ("contraceptive", "limit"), [(ContraceptiveType.COC, 49), (ContraceptiveType.POP, 54)]
)
def test_contraceptive_accepted_up_to_and_including_the_limit(
    contraceptive: ContraceptiveType, limit: int
) -> None:
    last_day = day_before_birthday(limit + 1)

    assert breaches(service=Service.CONTRACEPTION, contraceptive=contraceptive, on=last_day) == []


@pytest.mark.parametrize(
    ("contraceptive", "limit"), [(ContraceptiveType.COC, 49), (ContraceptiveType.POP, 54)]
)
def test_contraceptive_refused_from_the_birthday_after_the_limit(
    contraceptive: ContraceptiveType, limit: int
) -> None:
    found = breaches(
        service=Service.CONTRACEPTION, contraceptive=contraceptive, on=birthday(limit + 1)
    )

    assert fields(found) == ["patient.birth_date"]
    assert f"up to and including age {limit}" in found[0].message
    assert contraceptive.upper() in found[0].message


def test_pop_accepted_at_an_age_coc_is_refused() -> None:
    on = birthday(52)

    assert breaches(service=Service.CONTRACEPTION, contraceptive=ContraceptiveType.POP, on=on) == []
    assert fields(
        breaches(service=Service.CONTRACEPTION, contraceptive=ContraceptiveType.COC, on=on)
    ) == ["patient.birth_date"]


# ---- Discharge Medicines Service ------------------------------------------------------------


def test_dms_without_medicines_is_refused() -> None:
    found = breaches(service=Service.DMS, on=birthday(80), has_discharge_medicines=False)

    assert fields(found) == ["discharge_medicines"]


def test_dms_with_medicines_is_accepted() -> None:
    assert breaches(service=Service.DMS, on=birthday(80), has_discharge_medicines=True) == []


# ---- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", list(Service))
def test_birth_date_in_the_future_is_the_only_breach(service: Service) -> None:
    on = date(2026, 11, 22)
    found = breaches(
        service=service,
        born=on + timedelta(days=1),
        on=on,
        has_blood_pressure=False,
        has_discharge_medicines=False,
    )

    assert found == [RuleBreach("patient.birth_date", "Birth date is in the future.")]


def test_born_today_is_not_in_the_future() -> None:
    on = date(2026, 11, 22)

    assert breaches(pathway=Pathway.MINOR_ILLNESS, born=on, on=on) == []
    assert clinical_rules.age_on(on, on) == 0


LEAP_BORN = date(2008, 2, 29)


@pytest.mark.parametrize(
    ("on", "age"),
    [
        (date(2026, 2, 28), 17),  # no 29 February in 2026: not yet 18
        (date(2026, 3, 1), 18),  # the birthday counts from 1 March
        (date(2028, 2, 28), 19),
        (date(2028, 2, 29), 20),  # a leap year has the real birthday
        (date(2009, 2, 28), 0),
        (date(2009, 3, 1), 1),
    ],
)
def test_age_on_with_a_29_february_birthday(on: date, age: int) -> None:
    assert clinical_rules.age_on(LEAP_BORN, on) == age


def test_29_february_birthday_crosses_shingles_limit_on_1_march() -> None:
    before = breaches(pathway=Pathway.SHINGLES, born=LEAP_BORN, on=date(2026, 2, 28))
    after = breaches(pathway=Pathway.SHINGLES, born=LEAP_BORN, on=date(2026, 3, 1))

    assert (fields(before), after) == (["patient"], [])


@pytest.mark.parametrize(
    ("born", "on", "age"),
    [
        (date(2000, 12, 31), date(2026, 12, 30), 25),
        (date(2000, 12, 31), date(2026, 12, 31), 26),
        (date(2000, 1, 1), date(2025, 12, 31), 25),
        (date(2000, 6, 15), date(2026, 5, 16), 25),  # later month, earlier day
    ],
)
def test_age_on_counts_completed_years(born: date, on: date, age: int) -> None:
    assert clinical_rules.age_on(born, on) == age


# ---- pathway on another service ---------------------------------------------------------------


@pytest.mark.parametrize("service", [Service.BLOOD_PRESSURE, Service.CONTRACEPTION, Service.DMS])
def test_pathway_given_for_a_non_pharmacy_first_service_is_refused(service: Service) -> None:
    found = breaches(service=service, pathway=Pathway.SINUSITIS, on=birthday(40))

    assert fields(found) == ["pathway"]
