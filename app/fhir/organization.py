"""Directory organisation -> FHIR R4 Organization (UK Core, ODS identifier).

| organisation | Organization                                                      |
|--------------|-------------------------------------------------------------------|
| ods_code     | id, identifier (https://fhir.nhs.uk/Id/ods-organization-code)      |
| kind         | type (pharmref organisation kind)                                  |
| name, active | name, active                                                       |
| postcode     | address.postalCode                                                 |
| pcn / place  | partOf (ODS identifier of the PCN, or of the place for a PCN)      |
"""

from typing import Any

from app.fhir import systems
from app.fhir.resources import Bundle, Organization
from app.models.organisation import OrganisationPublic

PROFILE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Organization"
KIND_SYSTEM = "https://pharmref.nhs.example/CodeSystem/organisation-kind"


def to_organization(organisation: OrganisationPublic) -> Organization:
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": organisation.ods_code,
        "meta": {"profile": [PROFILE]},
        "identifier": [{"system": systems.ODS_ORGANISATION, "value": organisation.ods_code}],
        "active": organisation.active,
        "type": [{"coding": [{"system": KIND_SYSTEM, "code": str(organisation.kind)}]}],
        "name": organisation.name,
    }
    if organisation.postcode:
        resource["address"] = [{"postalCode": organisation.postcode}]
    parent = organisation.pcn or organisation.place
    if parent:
        resource["partOf"] = {"identifier": {"system": systems.ODS_ORGANISATION, "value": parent}}
    return Organization.model_validate(resource)


def to_searchset(organisations: list[OrganisationPublic], *, self_url: str) -> Bundle:
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(organisations),
            "link": [{"relation": "self", "url": self_url}],
            "entry": [
                {
                    "fullUrl": f"Organization/{o.ods_code}",
                    "resource": to_organization(o),
                    "search": {"mode": "match"},
                }
                for o in organisations
            ],
        }
    )
