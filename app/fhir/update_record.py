"""Consultation -> GP Connect Update Record ITK3 message (FHIR STU3), shaped as the published examples.

Pure: no DB, no HTTP. The structure follows `update-record-examples/json-converted/*.json`
(GP Connect: Update Record 1.1.x examples; ABPM codes from the 1.2.0 observation guidance):

    Bundle message (ITK-Message-Bundle-1)
     +- MessageHeader (ITK-MessageHeader-2): event ITK-MessageEvent-2|ITK014M, ITK message
     |    handling extension (BusAck, InfAck, RecipientType FI, SenderReference = Encounter urn),
     |    sender -> Organization, source.endpoint = the sender's MESH mailbox, focus -> document
     +- Organization (CareConnect-ITK-Header-Organization-1): the sending pharmacy's ODS code
     +- Bundle document (ITK-Document-Bundle-1)
          +- Composition (CareConnect-Composition-1): type = service SNOMED code, author ->
          |    Practitioner, title "<pharmacy> - <service>", ONE uncoded section without text
          |    listing every other entry (GP Connect forbids HTML in section.text; PRSB headings go
          |    in each resource's meta.tag instead)
          +- Encounter, Organization (pharmacy), Practitioner (GPhC), PractitionerRole (R1290),
          |    Patient (NHS number), all CareConnect-GPC profiles
          +- Observation*: BP 163020007 / 72313002 / 1091811000000102, pulse 364075005,
          |    ABPM 2181371000000107 / 2181381000000109 / 2181391000000106, BMI 60621009
          +- MedicationDispense: dm+d, CareConnect-MedicationSupplyType-1 patient-group-direction
          +- Condition (Pharmacy First clinical pathways), tag presenting-complaints-or-issues
          +- ClinicalImpression: clinical-summary, information-and-advice-given

Departures from the examples, on purpose: the contraception supply is typed
patient-group-direction (the service supplies under a PGD; contraception example 1 says
prescription-dispensing); the blood-pressure example's diastolic id 1091811000000100 fails the
SNOMED check digit, so 1091811000000102 is sent (fixed in guidance 1.1.5). The examples' R4
observation-category system is kept because receivers are built against them.

GP Connect Update Record has no Discharge Medicines Service use case, and MESH routes the
message by NHS number: both are refused with NotSupported.
"""

import uuid
from datetime import datetime
from typing import Any

from app.core.errors import NotSupported
from app.fhir import stu3, systems
from app.fhir.summary import (
    ABPM_DIASTOLIC,
    ABPM_HEADER,
    ABPM_RESULT_TEXT,
    ABPM_SYSTOLIC,
    BMI_SNOMED,
    BP_CATEGORY_TEXT,
    DIASTOLIC_SNOMED,
    HEART_RATE_SNOMED,
    SEEN_IN_PRIMARY_CARE,
    SYSTOLIC_SNOMED,
    Code,
    Facts,
    OrganisationLike,
    consultation_facts,
    json_number,
    split_name,
)
from app.models.consultation import Consultation
from app.models.enums import Service
from app.models.referral import Referral

Json = dict[str, Any]

_STU3 = "https://fhir.nhs.uk/STU3/StructureDefinition/"
PROFILE: dict[str, str] = {
    "message": _STU3 + "ITK-Message-Bundle-1",
    "MessageHeader": _STU3 + "ITK-MessageHeader-2",
    "header-organization": _STU3 + "CareConnect-ITK-Header-Organization-1",
    "document": _STU3 + "ITK-Document-Bundle-1",
    "Composition": "https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Composition-1",
    "Encounter": _STU3 + "CareConnect-GPC-Encounter-1",
    "Organization": _STU3 + "CareConnect-GPC-Organization-1",
    "Practitioner": _STU3 + "CareConnect-GPC-Practitioner-1",
    "PractitionerRole": _STU3 + "CareConnect-GPC-PractitionerRole-1",
    "Patient": _STU3 + "CareConnect-GPC-Patient-1",
    "Observation": _STU3 + "CareConnect-GPC-Observation-1",
    "MedicationDispense": _STU3 + "CareConnect-GPC-MedicationDispense-1",
    "Condition": _STU3 + "CareConnect-GPC-Condition-1",
    "ClinicalImpression": _STU3 + "CareConnect-GPC-ClinicalImpression-1",
}
MESSAGE_HANDLING = _STU3 + "Extension-ITK-MessageHandling-2"
NHS_NUMBER_VERIFICATION = _STU3 + "Extension-CareConnect-GPC-NHSNumberVerificationStatus-1"

UPDATE_RECORD_EVENT = (systems.ITK_MESSAGE_EVENT, "ITK014M", "ITK Update Record")
SUPPORTED_SERVICES = frozenset(
    {Service.PHARMACY_FIRST, Service.BLOOD_PRESSURE, Service.CONTRACEPTION}
)
BP_HEADER = (systems.SNOMED, "163020007", "On examination - blood pressure reading")
PHARMACIST_ROLE = (systems.SDS_JOB_ROLE_NAME, "R1290", "Pharmacist")
# pharmref has not traced the NHS number on PDS itself; it came with the referral.
NOT_TRACED = (systems.CARECONNECT_NHS_NUMBER_VERIFICATION, "02", "Number present but not traced")
HEADINGS: dict[str, tuple[str, str, str]] = {
    key: (systems.GPC_RECORD_HEADINGS, key, display)
    for key, display in (
        ("presenting-complaints-or-issues", "Presenting complaints or issues"),
        ("clinical-summary", "Clinical summary"),
        ("information-and-advice-given", "Information and advice given"),
    )
}


def _coding(code: Code) -> Json:
    system, value, display = code
    return {"system": system, "code": value, "display": display}


def _concept(code: Code) -> Json:
    return {"coding": [_coding(code)], "text": code[2]}


def _mmhg(value: int) -> Json:
    return {
        "value": value,
        "unit": "millimeter of mercury",
        "system": systems.UCUM,
        "code": "mm[Hg]",
    }


class _Doc:
    """Ids, references and the common resource header for one message."""

    def __init__(self, consultation_id: uuid.UUID, last_updated: str) -> None:
        self._base = consultation_id
        self.last_updated = last_updated

    def id(self, name: str) -> str:
        return str(uuid.uuid5(self._base, f"gpconnect-update-record:{name}"))

    def ref(self, name: str) -> Json:
        return {"reference": f"urn:uuid:{self.id(name)}"}

    def resource(
        self, resource_type: str, name: str, *, profile: str | None = None, tag: str | None = None
    ) -> Json:
        meta: Json = {
            "lastUpdated": self.last_updated,
            "profile": [profile or PROFILE[resource_type]],
        }
        if tag is not None:
            meta["tag"] = [_coding(HEADINGS[tag])]
        return {"resourceType": resource_type, "id": self.id(name), "meta": meta}

    def identified(self, resource_type: str, name: str, *, tag: str | None = None) -> Json:
        resource = self.resource(resource_type, name, tag=tag)
        resource["identifier"] = [{"system": systems.PHARMREF_RECORD_ENTRY, "value": self.id(name)}]
        return resource


def _entry(resource: Json) -> Json:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def _patient(doc: _Doc, referral: Referral, practice: OrganisationLike | None) -> Json:
    patient = doc.resource("Patient", "patient")
    assert referral.patient_nhs_number is not None
    patient["identifier"] = [
        {
            "extension": [
                {"url": NHS_NUMBER_VERIFICATION, "valueCodeableConcept": _concept(NOT_TRACED)}
            ],
            "system": systems.NHS_NUMBER,
            "value": referral.patient_nhs_number,
        },
        {"system": systems.PHARMREF_RECORD_ENTRY, "value": doc.id("patient")},
    ]
    patient["name"] = [
        {
            "use": "official",
            "family": referral.patient_family_name,
            "given": [referral.patient_given_name],
        }
    ]
    patient["gender"] = str(referral.patient_sex)
    patient["birthDate"] = referral.patient_birth_date.isoformat()
    practice_ods = practice.ods_code if practice is not None else referral.patient_practice_ods
    if practice_ods:
        reference: Json = {
            "identifier": {"system": systems.ODS_ORGANISATION, "value": practice_ods}
        }
        if practice is not None:
            reference["display"] = practice.name
        patient["generalPractitioner"] = [reference]
    return patient


def _practitioner(doc: _Doc, consultation: Consultation) -> Json:
    practitioner = doc.resource("Practitioner", "practitioner")
    practitioner["identifier"] = [
        {"system": systems.PHARMREF_RECORD_ENTRY, "value": doc.id("practitioner")},
        {"system": systems.GPHC_NUMBER, "value": consultation.gphc_number},
    ]
    family, given = split_name(consultation.clinician_name)
    name: Json = {"text": consultation.clinician_name, "family": family}
    if given:
        name["given"] = given
    practitioner["name"] = [name]
    return practitioner


def _encounter(doc: _Doc, facts: Facts) -> Json:
    encounter = doc.identified("Encounter", "encounter")
    encounter.update(
        {
            "status": "finished",
            "type": [_concept(SEEN_IN_PRIMARY_CARE)],
            "subject": doc.ref("patient"),
            "participant": [
                {
                    "type": [
                        {
                            "coding": [{"system": systems.GPC_PARTICIPANT_TYPE, "code": "REC"}],
                            "text": "recorder",
                        }
                    ],
                    "individual": doc.ref("practitioner"),
                }
            ],
            "period": {"start": facts.consulted_at.isoformat()},
            "reason": [_concept(facts.service_code)],
            "serviceProvider": doc.ref("pharmacy"),
        }
    )
    return encounter


def _observation(doc: _Doc, name: str, code: Code, effective: Json, recorded: str) -> Json:
    observation = doc.identified("Observation", name)
    observation.update(
        {
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": systems.OBSERVATION_CATEGORY,
                            "code": "vital-signs",
                            "display": "Vital Signs",
                        }
                    ],
                    "text": "Vital Signs",
                }
            ],
            "code": _concept(code),
            "subject": doc.ref("patient"),
            "context": doc.ref("encounter"),
            **effective,
            "issued": recorded,
            "performer": [doc.ref("practitioner")],
        }
    )
    return observation


def _observations(doc: _Doc, facts: Facts) -> list[Json]:
    recorded = facts.recorded_at.isoformat()
    observations = []
    for index, reading in enumerate(facts.bp_readings):
        effective = {"effectiveDateTime": reading.measured_at.isoformat()}
        bp = _observation(doc, f"bp-{index}", BP_HEADER, effective, recorded)
        if reading.category is not None:
            bp["comment"] = (
                f"{reading.category_basis}: "
                f"{BP_CATEGORY_TEXT.get(reading.category, reading.category)}; derived by pharmref."
            )
        bp["component"] = [
            {"code": _concept(SYSTOLIC_SNOMED), "valueQuantity": _mmhg(reading.systolic)},
            {"code": _concept(DIASTOLIC_SNOMED), "valueQuantity": _mmhg(reading.diastolic)},
        ]
        observations.append(bp)
        if reading.pulse is not None:
            pulse = _observation(doc, f"pulse-{index}", HEART_RATE_SNOMED, effective, recorded)
            pulse["valueQuantity"] = {
                "value": reading.pulse,
                "unit": "per minute",
                "system": systems.UCUM,
                "code": "{beats}/min",
            }
            if reading.irregular_pulse:
                pulse["comment"] = "Irregular pulse."
            observations.append(pulse)
    if facts.abpm is not None:
        abpm = facts.abpm
        period: Json = {"end": abpm.returned_on.isoformat()}
        if abpm.fitted_on is not None:
            period["start"] = abpm.fitted_on.isoformat()
        average = _observation(doc, "abpm", ABPM_HEADER, {"effectivePeriod": period}, recorded)
        average["comment"] = (
            f"Average of {abpm.readings} daytime readings; result derived by pharmref: "
            f"{ABPM_RESULT_TEXT.get(abpm.result or '', 'none')}."
        )
        average["component"] = [
            {"code": _concept(ABPM_SYSTOLIC), "valueQuantity": _mmhg(abpm.systolic)},
            {"code": _concept(ABPM_DIASTOLIC), "valueQuantity": _mmhg(abpm.diastolic)},
        ]
        observations.append(average)
    if facts.bmi is not None:
        effective = {"effectiveDateTime": facts.consulted_at.isoformat()}
        bmi = _observation(doc, "bmi", BMI_SNOMED, effective, recorded)
        bmi["valueQuantity"] = {
            "value": facts.bmi,
            "unit": "kilogram per square meter",
            "system": systems.UCUM,
            "code": "kg/m2",
        }
        observations.append(bmi)
    return observations


def _dispense(doc: _Doc, facts: Facts) -> Json | None:
    supply = facts.supply
    if supply is None:
        return None
    dispense = doc.identified("MedicationDispense", "dispense")
    dispense.update(
        {
            "status": "completed",
            "category": {
                "coding": [
                    {
                        "system": systems.STU3_MEDICATION_DISPENSE_CATEGORY,
                        "code": "community",
                        "display": "Community",
                    }
                ],
                "text": "Community",
            },
            "medicationCodeableConcept": {
                "coding": [
                    {"system": systems.DMD, "code": supply.dmd_code, "display": supply.name}
                ],
                "text": supply.name,
            },
            "subject": doc.ref("patient"),
            "context": doc.ref("encounter"),
            "performer": [{"actor": doc.ref("practitioner")}],
            "type": _concept(
                (
                    systems.CARECONNECT_MEDICATION_SUPPLY_TYPE,
                    "patient-group-direction",
                    "Patient group direction",
                )
            ),
        }
    )
    if supply.quantity is not None:
        quantity: Json = {"value": json_number(supply.quantity)}
        if supply.unit:
            quantity["unit"] = supply.unit
        dispense["quantity"] = quantity
    if supply.months is not None:
        dispense["daysSupply"] = {
            "value": supply.months,
            "unit": "month",
            "system": systems.UCUM,
            "code": "mo",
        }
    handed_over = facts.consulted_at.isoformat()
    dispense["whenPrepared"] = handed_over
    dispense["whenHandedOver"] = handed_over
    if supply.dose:
        dispense["dosageInstruction"] = [{"text": supply.dose, "patientInstruction": supply.dose}]
    return dispense


def _condition(doc: _Doc, facts: Facts) -> Json | None:
    # A Pharmacy First minor illness has no coded condition; its reason is in the clinical summary.
    if facts.condition is None or facts.condition[0] is None:
        return None
    code, text = facts.condition
    condition = doc.identified("Condition", "condition", tag="presenting-complaints-or-issues")
    condition.update(
        {
            "clinicalStatus": "active",
            "code": {"coding": [{"system": systems.SNOMED, "code": code}], "text": text},
            "subject": doc.ref("patient"),
            "context": doc.ref("encounter"),
            "assertedDate": facts.consulted_at.isoformat(),
            "asserter": doc.ref("practitioner"),
        }
    )
    return condition


def _impression(doc: _Doc, facts: Facts, heading: str, lines: list[str]) -> Json:
    impression = doc.identified("ClinicalImpression", heading, tag=heading)
    impression.update(
        {
            "status": "completed",
            "subject": doc.ref("patient"),
            "context": doc.ref("encounter"),
            "date": facts.recorded_at.isoformat(),
            "assessor": doc.ref("practitioner"),
            "summary": " ".join(lines),
        }
    )
    return impression


def update_record_message_json(
    *,
    referral: Referral,
    consultation: Consultation,
    pharmacy: OrganisationLike,
    practice: OrganisationLike | None,
    now: datetime,
    sender_mailbox: str | None = None,
) -> Json:
    """The GP Connect Update Record ITK3 message for one consultation, as STU3 JSON.

    `sender_mailbox` is the pharmacy's MESH mailbox id (MessageHeader.source.endpoint); without
    one the pharmacy's ODS code stands in, as MESH's LocalId does.
    """
    if consultation.service not in SUPPORTED_SERVICES:
        raise NotSupported(
            f"GP Connect Update Record has no {consultation.service} use case; "
            "send the FHIR R4 consultation summary document instead (R4 only)."
        )
    if not referral.patient_nhs_number:
        raise NotSupported(
            "GP Connect Update Record is routed to the GP practice by NHS number; "
            "this patient has none, so send the FHIR R4 consultation summary document instead."
        )
    facts = consultation_facts(referral=referral, consultation=consultation)
    doc = _Doc(consultation.id, now.isoformat())
    encounter = _encounter(doc, facts)
    pharmacy_org = doc.resource("Organization", "pharmacy")
    pharmacy_org["identifier"] = [{"system": systems.ODS_ORGANISATION, "value": pharmacy.ods_code}]
    pharmacy_org["name"] = pharmacy.name
    role = doc.resource("PractitionerRole", "role")
    role.update(
        {
            "practitioner": doc.ref("practitioner"),
            "organization": doc.ref("pharmacy"),
            "code": [_concept(PHARMACIST_ROLE)],
        }
    )
    members: list[Json] = [
        encounter,
        pharmacy_org,
        _practitioner(doc, consultation),
        role,
        _patient(doc, referral, practice),
        *_observations(doc, facts),
    ]
    dispense = _dispense(doc, facts)
    if dispense is not None:
        members.append(dispense)
    condition = _condition(doc, facts)
    if condition is not None:
        members.append(condition)
    members.append(_impression(doc, facts, "clinical-summary", facts.consultation_lines))
    members.append(_impression(doc, facts, "information-and-advice-given", facts.outcome_lines))

    composition = doc.resource("Composition", "composition")
    composition.update(
        {
            "identifier": {"system": systems.PHARMREF_RECORD_ENTRY, "value": composition["id"]},
            "status": "final",
            "type": _concept(facts.service_code),
            "subject": doc.ref("patient"),
            "encounter": doc.ref("encounter"),
            "date": facts.recorded_at.isoformat(),
            "author": [doc.ref("practitioner")],
            "title": f"{pharmacy.name} - {facts.service_title}",
            "section": [{"entry": [{"reference": f"urn:uuid:{r['id']}"} for r in members]}],
        }
    )
    document = doc.resource("Bundle", "document", profile=PROFILE["document"])
    document.update(
        {
            "identifier": {"system": systems.PHARMREF_DOCUMENT, "value": document["id"]},
            "type": "document",
            "entry": [_entry(composition), *(_entry(r) for r in members)],
        }
    )

    sent = f"message:{now.isoformat()}"
    sender = doc.resource("Organization", "sender", profile=PROFILE["header-organization"])
    sender["identifier"] = [{"system": systems.ODS_ORGANISATION, "value": pharmacy.ods_code}]
    sender["name"] = pharmacy.name
    header = doc.resource("MessageHeader", f"{sent}:header")
    header.update(
        {
            "extension": [
                {
                    "url": MESSAGE_HANDLING,
                    "extension": [
                        {"url": "BusAckRequested", "valueBoolean": True},
                        {"url": "InfAckRequested", "valueBoolean": True},
                        {
                            "url": "RecipientType",
                            "valueCoding": {
                                "system": systems.ITK_RECIPIENT_TYPE,
                                "code": "FI",
                                "display": "For Information",
                            },
                        },
                        {
                            "url": "MessageDefinition",
                            "valueReference": {
                                "reference": "https://fhir.nhs.uk/MessageDefinition"
                            },
                        },
                        {"url": "SenderReference", "valueString": f"urn:uuid:{encounter['id']}"},
                        {"url": "LocalExtension", "valueString": "None"},
                    ],
                }
            ],
            "event": _coding(UPDATE_RECORD_EVENT),
            "sender": doc.ref("sender"),
            "timestamp": now.isoformat(),
            "source": {"endpoint": sender_mailbox or pharmacy.ods_code},
            "focus": [{"reference": f"urn:uuid:{document['id']}"}],
        }
    )
    message = doc.resource("Bundle", sent, profile=PROFILE["message"])
    message.update(
        {
            "identifier": {"system": systems.PHARMREF_MESSAGE, "value": message["id"]},
            "type": "message",
            "entry": [_entry(header), _entry(sender), _entry(document)],
        }
    )
    return message


def to_update_record_message(
    *,
    referral: Referral,
    consultation: Consultation,
    pharmacy: OrganisationLike,
    practice: OrganisationLike | None,
    now: datetime,
    sender_mailbox: str | None = None,
) -> stu3.Bundle:
    """The Update Record message as an STU3 Bundle model (see update_record_message_json)."""
    return stu3.Bundle.model_validate(
        update_record_message_json(
            referral=referral,
            consultation=consultation,
            pharmacy=pharmacy,
            practice=practice,
            now=now,
            sender_mailbox=sender_mailbox,
        )
    )
