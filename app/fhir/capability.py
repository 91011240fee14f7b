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
