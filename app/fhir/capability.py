"""The CapabilityStatement served at /fhir/metadata."""

from datetime import datetime

from app.fhir.resources import FHIR_VERSION, CapabilityStatement


def capability_statement(
    *, base_url: str, software_version: str, published: datetime
) -> CapabilityStatement:
    return CapabilityStatement.model_validate(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": published.isoformat(),
            "publisher": "pharmref",
            "kind": "instance",
            "software": {"name": "pharmref", "version": software_version},
            "implementation": {
                "description": "Community pharmacy referrals (BaRS Application 5 receiver) and directory",
                "url": f"{base_url}/fhir",
            },
            "fhirVersion": FHIR_VERSION,
            "format": ["application/fhir+json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "description": "Bearer JWT (RS256) with org (ODS code) and role claims.",
                    },
                    "resource": [
                        {
                            "type": "ServiceRequest",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {"name": "status", "type": "token"},
                                {"name": "_lastUpdated", "type": "date"},
                                {"name": "_count", "type": "number"},
                            ],
                        },
                        {
                            "type": "Task",
                            "documentation": "The receiving pharmacy's work on a referral: one "
                            "Task per referral (id = the referral id); a forwarded referral's "
                            "Task is based on its own ServiceRequest and the one it came from.",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {
                                    "name": "based-on",
                                    "type": "reference",
                                    "documentation": "Required: ServiceRequest/{id}.",
                                }
                            ],
                        },
                        {
                            "type": "Composition",
                            "documentation": "Consultation summaries: the Composition that "
                            "leads each summary document (one per consultation, and one per DMS "
                            "stage). Its id is the document's id: the whole document is "
                            "GET Bundle/{Composition.id}; each search entry also carries a "
                            "related link to it. A GP practice sees the summaries of referrals "
                            "it made and of its registered patients; a pharmacy those it wrote; "
                            "NHS 111 and trusts those of their referrals. Searches run oldest "
                            "recorded first, with total and next links; an unknown parameter "
                            "or bad value is a 400.",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {
                                    "name": "subject",
                                    "type": "reference",
                                    "documentation": "Only as subject:identifier="
                                    "https://fhir.nhs.uk/Id/nhs-number|{NHS number} (one).",
                                },
                                {
                                    "name": "patient",
                                    "type": "reference",
                                    "documentation": "The same as subject (patient:identifier).",
                                },
                                {
                                    "name": "_lastUpdated",
                                    "type": "date",
                                    "documentation": "When the summary was recorded (summaries "
                                    "never change). gt, ge, lt, le with an instant (an exact "
                                    "point) or a date (YYYY, YYYY-MM, YYYY-MM-DD: that whole "
                                    "period in UTC); no prefix or eq takes a date only; may "
                                    "repeat.",
                                },
                                {
                                    "name": "_count",
                                    "type": "number",
                                    "documentation": "0 (total only) up to the server's maximum "
                                    "page size (PHARMREF_PAGE_SIZE_MAX).",
                                },
                            ],
                        },
                        {
                            "type": "Bundle",
                            "documentation": "Consultation summary documents, id = the "
                            "Composition id; _format=gp-connect-update-record gives the GP "
                            "Connect Update Record (STU3) message instead, where one exists.",
                            "interaction": [{"code": "read"}],
                        },
                        {
                            "type": "Organization",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [{"name": "identifier", "type": "token"}],
                        },
                    ],
                    "operation": [
                        {
                            "name": "process-message",
                            "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
                        }
                    ],
                }
            ],
        }
    )
