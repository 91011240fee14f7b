"""Identifier and code system URIs (NHS England, UK Core, BaRS) and pharmref's own."""

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORGANISATION = "https://fhir.nhs.uk/Id/ods-organization-code"
DOS_SERVICE_ID = "https://fhir.nhs.uk/Id/dos-service-id"
SDS_ROLE_PROFILE = "https://fhir.nhs.uk/Id/sds-role-profile-id"
GPHC_NUMBER = "https://fhir.hl7.org.uk/Id/gphc-number"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DMD = "https://dmd.nhs.uk"

HTTP_ERROR_CODES = "https://fhir.nhs.uk/CodeSystem/http-error-codes"
MESSAGE_EVENTS = "https://fhir.nhs.uk/CodeSystem/message-events-bars"
MESSAGE_REASON = "https://fhir.nhs.uk/CodeSystem/message-reason-bars"
SERVICEREQUEST_CATEGORY = "https://fhir.nhs.uk/CodeSystem/message-category-servicerequest"
USE_CASES = "https://fhir.nhs.uk/CodeSystem/usecases-categories-bars"

# pharmref's own code system for the Discharge Medicines Service: no national BaRS use case exists.
PHARMREF_USE_CASES = "https://pharmref.nhs.example/CodeSystem/usecases"
PHARMREF_REFERRAL_REFERENCE = "https://pharmref.nhs.example/Id/referral-reference"
PHARMREF_SERVICE = "https://pharmref.nhs.example/CodeSystem/service"

# Spellings seen in official examples that differ from the canonical URI (URIs are case-sensitive).
ALIASES = {
    "https://fhir.nhs.uk/id/ods-organization-code": ODS_ORGANISATION,
    "http://fhir.nhs.uk/Id/dos-service-id": DOS_SERVICE_ID,
    "https://fhir.nhs.uk/id/nhs-number": NHS_NUMBER,
}
