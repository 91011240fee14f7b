"""Enumerations shared by the tables, the JSON API and the FHIR mappers."""

from enum import StrEnum


class OrgKind(StrEnum):
    GP_PRACTICE = "gp-practice"
    PHARMACY = "pharmacy"
    PCN = "pcn"
    TRUST = "trust"
    NHS111 = "nhs111"
    ICB = "icb"
    PLACE = "place"


class Service(StrEnum):
    PHARMACY_FIRST = "pharmacy-first"
    BLOOD_PRESSURE = "blood-pressure"
    CONTRACEPTION = "contraception"
    DMS = "dms"


class Pathway(StrEnum):
    """Pharmacy First: the seven clinical pathways, or a minor-illness referral."""

    MINOR_ILLNESS = "minor-illness"
    SINUSITIS = "sinusitis"
    SORE_THROAT = "sore-throat"
    ACUTE_OTITIS_MEDIA = "acute-otitis-media"
    INFECTED_INSECT_BITE = "infected-insect-bite"
    IMPETIGO = "impetigo"
    SHINGLES = "shingles"
    UNCOMPLICATED_UTI = "uncomplicated-uti"


class Role(StrEnum):
    GP_PRACTICE = "gp-practice"
    PHARMACY = "pharmacy"
    TRUST = "trust"
    NHS111 = "nhs111"
    ICB_ANALYST = "icb-analyst"
    ADMIN = "admin"


class ReferralSource(StrEnum):
    GP_PRACTICE = "gp-practice"
    NHS111 = "nhs111"
    URGENT_CARE = "urgent-care"
    TRUST = "trust"
    SELF_REFERRAL = "self-referral"


class ReferralStatus(StrEnum):
    RECEIVED = "received"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    FORWARDED = "forwarded"
    RETURNED = "returned"
    CANCELLED = "cancelled"
    NO_CONTACT = "no-contact"
    COMPLETED = "completed"


class DueState(StrEnum):
    """Where an open referral stands against its timeframe (`due_at`)."""

    DUE = "due"
    OVERDUE = "overdue"


class Sex(StrEnum):
    """Administrative gender, as FHIR Patient.gender."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class ContraceptiveType(StrEnum):
    COC = "coc"
    POP = "pop"


class Intake(StrEnum):
    FHIR = "fhir"
    JSON = "json"
