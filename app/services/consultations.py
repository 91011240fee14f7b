"""Recording consultations: one validated schema per service, clinical rules applied by pharmref.

pharmref computes the clinical results itself (BP category, ABPM result, COC safety, DMS timing)
and stores them beside what the pharmacist recorded; it never takes a category from the client.
Where the pharmacist's outcome differs from the one the rules give, a reasoned override is
required and kept. Supplying COC outside the safe BP and BMI range is refused outright (outside
the PGD). A very high BP or an irregular pulse raises an urgent escalation to the referrer.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core.config import settings
from app.core.errors import Conflict, Forbidden, InvalidTransition, Issue, Unprocessable
from app.db import writes
from app.db.base import utc_now
from app.db.session import execute_read
from app.models.consultation import (
    BloodPressureConsultationIn,
    Consultation,
    ConsultationIn,
    ConsultationPublic,
    ContraceptionConsultationIn,
    DmsStageIn,
    PharmacyFirstConsultationIn,
)
from app.models.enums import ContraceptiveType, Pathway, ReferralStatus, Role
from app.models.referral import Referral
from app.models.user import User
from app.services import clinical_rules as rules
from app.services import lifecycle, rollups, summaries

_SAME_TIME = "This consultation stage was recorded at the same time by someone else."


@dataclass
class _Assessment:
    """What one consultation amounts to, before it is written."""

    stage: int
    outcome: str
    derived: dict[str, Any]
    completes: bool
    escalation: str | None = None
    referral_values: dict[str, Any] = field(default_factory=dict)


def _refuse(message: str, *breaches: rules.RuleBreach) -> Unprocessable:
    return Unprocessable(
        message, issues=[Issue("business-rule", b.message, b.field) for b in breaches]
    )


def _pharmacy_first(
    consultation: PharmacyFirstConsultationIn, referral: Referral, today: Any
) -> _Assessment:
    breaches = []
    band = rules.PATHWAY_BANDS[consultation.pathway]
    in_band = band is None or rules.in_band(
        band, age=rules.age_on(referral.patient_birth_date, today), sex=referral.patient_sex
    )
    clinical = consultation.pathway is not Pathway.MINOR_ILLNESS
    if clinical and consultation.gateway_criteria_met is None:
        breaches.append(
            rules.RuleBreach(
                "gateway_criteria_met", "Say whether the pathway's gateway criteria were met."
            )
        )
    if consultation.outcome == "pgd-supply":
        if not clinical:
            breaches.append(
                rules.RuleBreach("outcome", "PGD supply is for the seven clinical pathways only.")
            )
        if consultation.gateway_criteria_met is False:
            breaches.append(
                rules.RuleBreach("outcome", "PGD supply needs the gateway criteria met.")
            )
        if not in_band and band is not None:
            breaches.append(
                rules.RuleBreach(
                    "pathway", f"The {consultation.pathway} PGD is for {band.describe()}."
                )
            )
        if consultation.medicine is None:
            breaches.append(
                rules.RuleBreach(
                    "medicine", "A PGD supply records the medicine, dose and quantity."
                )
            )
    if breaches:
        raise _refuse("The Pharmacy First consultation breaks the service rules.", *breaches)
    return _Assessment(
        stage=0,
        outcome=consultation.outcome,
        derived={"pathway_age_band_met": in_band, "clinical_pathway": clinical},
        completes=True,
    )


def _blood_pressure(
    consultation: BloodPressureConsultationIn, earlier_stages: set[int]
) -> _Assessment:
    readings = [rules.Reading(r.systolic, r.diastolic) for r in consultation.clinic_readings]
    clinic = rules.clinic_reading(readings)
    category = rules.bp_category(clinic)
    irregular = any(r.irregular_pulse for r in consultation.clinic_readings)
    abpm = consultation.abpm
    pending = bool(abpm and abpm.fitted_on and not abpm.returned_on)
    result = None
    if abpm and abpm.returned_on:
        missing = [
            name
            for name in (
                "daytime_readings",
                "daytime_average_systolic",
                "daytime_average_diastolic",
            )
            if getattr(abpm, name) is None
        ]
        if missing:
            raise _refuse(
                "A returned ABPM needs its daytime readings count and averages.",
                *[
                    rules.RuleBreach(f"abpm.{name}", "Required when the monitor is returned.")
                    for name in missing
                ],
            )
        assert abpm.daytime_readings is not None
        assert abpm.daytime_average_systolic is not None
        assert abpm.daytime_average_diastolic is not None
        result = rules.abpm_result(
            daytime_readings=abpm.daytime_readings,
            average=rules.Reading(abpm.daytime_average_systolic, abpm.daytime_average_diastolic),
        )
    recommended = rules.bp_recommended_outcome(
        category=category, irregular_pulse=irregular, abpm=result, abpm_pending=pending
    )
    escalate = rules.needs_urgent_escalation(category=category, irregular_pulse=irregular)
    values: dict[str, Any] = {}
    if pending:
        assert abpm is not None
        assert abpm.fitted_on is not None
        values["due_at"] = datetime.combine(abpm.fitted_on, time(23, 59), tzinfo=UTC) + timedelta(
            days=settings.abpm_return_days
        )
    return _Assessment(
        stage=1 if pending else (2 if 1 in earlier_stages else 0),
        outcome=consultation.outcome,
        derived={
            "clinic_reading": {"systolic": clinic.systolic, "diastolic": clinic.diastolic},
            "category": category,
            "irregular_pulse": irregular,
            "abpm_pending": pending,
            "abpm_result": result,
            "recommended_outcome": recommended,
            "urgent_escalation": escalate,
        },
        completes=not pending,
        escalation=(
            "Very high blood pressure (180/120 or above): same-day GP assessment needed."
            if category is rules.BpCategory.VERY_HIGH
            else "Irregular pulse found at the blood pressure check: GP assessment needed."
        )
        if escalate
        else None,
        referral_values=values,
    )


def _contraception(
    consultation: ContraceptionConsultationIn, referral: Referral, today: Any
) -> _Assessment:
    reading = (
        rules.Reading(consultation.blood_pressure.systolic, consultation.blood_pressure.diastolic)
        if consultation.blood_pressure
        else None
    )
    coc_breaches = rules.coc_supply_breaches(reading=reading, bmi=consultation.bmi)
    age = rules.age_on(referral.patient_birth_date, today)
    limit = rules.CONTRACEPTIVE_MAX_AGE[consultation.pill]
    breaches = []
    if consultation.outcome == "supplied":
        if consultation.product is None:
            breaches.append(rules.RuleBreach("product", "A supply records the product (dm+d)."))
        if consultation.months_supplied is None:
            breaches.append(
                rules.RuleBreach(
                    "months_supplied", "A supply records the months supplied (1 to 12)."
                )
            )
        if age > limit:
            breaches.append(
                rules.RuleBreach(
                    "pill", f"{consultation.pill.upper()} is supplied up to age {limit}."
                )
            )
        if consultation.pill is ContraceptiveType.COC:
            breaches.extend(coc_breaches)
    elif consultation.reason_not_supplied is None:
        breaches.append(rules.RuleBreach("reason_not_supplied", "Say why nothing was supplied."))
    if breaches:
        raise _refuse("The contraception consultation breaks the service rules.", *breaches)
    return _Assessment(
        stage=0,
        outcome=consultation.outcome,
        derived={
            "bp_category": rules.bp_category(reading) if reading else None,
            "coc_safe": not coc_breaches,
            "coc_exclusions": [b.message for b in coc_breaches],
            "age_within_limit": age <= limit,
        },
        completes=True,
    )


_DMS_CHECK = {1: "reconciled", 2: "prescription_checked", 3: "patient_consulted"}


def _dms(
    consultation: DmsStageIn, referral: Referral, earlier_stages: set[int], now: datetime
) -> _Assessment:
    stage = consultation.stage
    missing = [s for s in range(1, stage) if s not in earlier_stages]
    if missing:
        raise _refuse(
            "DMS stages are recorded in order.",
            rules.RuleBreach("stage", f"Stage {missing[0]} is not recorded yet."),
        )
    check = _DMS_CHECK[stage]
    ended = consultation.could_not_complete_reason is not None
    if not ended and getattr(consultation, check) is not True:
        raise _refuse(
            f"Stage {stage} is complete only when {check.replace('_', ' ')}, or with a reason it could not be.",
            rules.RuleBreach(check, "Must be true, or give could_not_complete_reason."),
        )
    derived: dict[str, Any] = {"issues_found": len(consultation.issues_found), "ended_early": ended}
    if stage == 1:
        done = consultation.consulted_at or now
        hours = (done - referral.created_at).total_seconds() / 3600
        derived["hours_from_receipt"] = round(hours, 1)
        derived["stage1_within_72_hours"] = hours <= 72
    return _Assessment(
        stage=stage,
        outcome="ended-early" if ended else f"stage-{stage}-complete",
        derived=derived,
        completes=stage == 3 or ended,
    )


def record_consultation(
    *,
    session: Session,
    referral: Referral,
    caller: User,
    consultation_in: ConsultationIn,
    version: int | None,
) -> tuple[Consultation, Referral]:
    """Record a consultation (or DMS stage) and, when it ends the service, complete the referral."""
    if caller.role is not Role.PHARMACY or caller.org != referral.pharmacy_ods:
        raise Forbidden("Only the receiving pharmacy records consultations.")
    if consultation_in.service != referral.service:
        raise Unprocessable(
            f"This is a {referral.service} referral.",
            issues=[
                Issue(
                    "business-rule", "Consultation service differs from the referral's.", "service"
                )
            ],
        )
    if referral.status is not ReferralStatus.ACCEPTED:
        raise InvalidTransition(
            f"The referral is {referral.status}; accept it before recording a consultation."
        )
    now = utc_now()
    # Only blood pressure (ABPM pending) and DMS (stages 1 to 3) record more than one
    # consultation per referral; every other service's consultation completes the referral, so
    # an accepted referral of those has none yet (and the unique index is the backstop).
    earlier = (
        {
            stage
            for (stage,) in execute_read(
                session, select(Consultation.stage).where(Consultation.referral_id == referral.id)
            )
        }
        if isinstance(consultation_in, BloodPressureConsultationIn | DmsStageIn)
        else set()
    )
    if isinstance(consultation_in, PharmacyFirstConsultationIn):
        assessment = _pharmacy_first(consultation_in, referral, now.date())
    elif isinstance(consultation_in, BloodPressureConsultationIn):
        assessment = _blood_pressure(consultation_in, earlier)
    elif isinstance(consultation_in, ContraceptionConsultationIn):
        assessment = _contraception(consultation_in, referral, now.date())
    else:
        assessment = _dms(consultation_in, referral, earlier, now)
    recommended = assessment.derived.get("recommended_outcome")
    override = consultation_in.override
    if recommended is not None and assessment.outcome != recommended and override is None:
        raise Unprocessable(
            f"The rules give the outcome {recommended}; record that, or give an override with your reasons.",
            issues=[
                Issue(
                    "business-rule",
                    f"Outcome differs from {recommended} without an override.",
                    "outcome",
                )
            ],
        )
    if assessment.stage in earlier:
        raise Conflict(f"Stage {assessment.stage} is already recorded for this referral.")
    consultation = writes.construct(
        Consultation,
        referral_id=referral.id,
        service=referral.service,
        stage=assessment.stage,
        outcome=assessment.outcome,
        clinician_name=consultation_in.clinician_name,
        gphc_number=consultation_in.gphc_number,
        record=consultation_in.model_dump(mode="json", exclude={"version", "override"}),
        derived={k: (str(v) if hasattr(v, "value") else v) for k, v in assessment.derived.items()},
        override=override.model_dump() | {"by": caller.subject} if override else None,
        recorded_by_org=caller.org,
        recorded_by_subject=caller.subject,
        recorded_at=now,
    )
    writes.insert(session, consultation)
    detail = {
        "consultation_id": str(consultation.id),
        "stage": assessment.stage,
        "outcome": assessment.outcome,
    }
    escalate = assessment.escalation is not None and referral.escalated_at is None
    if escalate:
        assessment.referral_values["escalated_at"] = now
    if assessment.completes:
        lifecycle.apply_transition(
            session=session,
            referral=referral,
            caller=caller,
            target=ReferralStatus.COMPLETED,
            expected_version=version,
            action="completed",
            detail=detail,
            values=assessment.referral_values,
        )
    else:
        lifecycle.record_progress(
            session=session,
            referral=referral,
            caller=caller,
            expected_version=version,
            action="consultation-recorded",
            detail=detail,
            values=assessment.referral_values,
        )
    if escalate:
        lifecycle.record_event(
            session=session,
            referral_id=referral.id,
            caller=caller,
            action="urgent-escalation",
            version=(version or 0) + 1,
            detail={"reason": assessment.escalation, "consultation_id": str(consultation.id)},
            notify_referrer=True,
        )
    rollups.consultation_recorded(session=session, referral=referral, consultation=consultation)
    summaries.queue_summary(session=session, referral=referral, consultation=consultation)
    try:
        lifecycle.commit_change(session)
    except IntegrityError as exc:
        raise Conflict(_SAME_TIME) from exc
    return consultation, referral


def list_consultations(*, session: Session, referral: Referral) -> list[ConsultationPublic]:
    rows = session.exec(
        select(Consultation)
        .where(Consultation.referral_id == referral.id)
        .order_by(col(Consultation.recorded_at))
    ).all()
    return [ConsultationPublic.model_validate(row) for row in rows]
