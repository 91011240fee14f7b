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
PHARMREF_REFERRAL_STATUS = "https://pharmref.nhs.example/CodeSystem/referral-status"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"

# Spellings seen in official examples that differ from the canonical URI (URIs are case-sensitive).
ALIASES = {
    "https://fhir.nhs.uk/id/ods-organization-code": ODS_ORGANISATION,
    "http://fhir.nhs.uk/Id/dos-service-id": DOS_SERVICE_ID,
    "https://fhir.nhs.uk/id/nhs-number": NHS_NUMBER,
}

# Consultation summaries: R4 documents (UK Core) and GP Connect Update Record (STU3).
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
OBSERVATION_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
LIST_EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
MEDICATION_DISPENSE_CATEGORY = (
    "http://terminology.hl7.org/fhir/CodeSystem/medicationdispense-category"
)
UKCORE_RECORD_HEADINGS = "https://fhir.hl7.org.uk/CodeSystem/UKCore-RecordStandardHeadings"
UKCORE_MEDICATION_SUPPLY_TYPE = "https://fhir.hl7.org.uk/CodeSystem/UKCore-MedicationSupplyType"
PHARMREF_DOCUMENT = "https://pharmref.nhs.example/Id/consultation-summary"
PHARMREF_MESSAGE = "https://pharmref.nhs.example/Id/update-record-message"
PHARMREF_RECORD_ENTRY = "https://pharmref.nhs.example/Id/record-entry"
# GP Connect Update Record (ITK3, STU3); the observation-category system is the R4 one, as in
# every published Update Record example.
ITK_MESSAGE_EVENT = "https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-2"
ITK_RECIPIENT_TYPE = "https://fhir.nhs.uk/STU3/CodeSystem/ITK-RecipientType-1"
GPC_RECORD_HEADINGS = "https://fhir.nhs.uk/CodeSystem/RecordStandardHeadings"
GPC_PARTICIPANT_TYPE = "https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-ParticipantType-1"
SDS_JOB_ROLE_NAME = "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-SDSJobRoleName-1"
CARECONNECT_MEDICATION_SUPPLY_TYPE = (
    "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-MedicationSupplyType-1"
)
CARECONNECT_NHS_NUMBER_VERIFICATION = (
    "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1"
)
STU3_MEDICATION_DISPENSE_CATEGORY = "http://hl7.org/fhir/medication-dispense-category"
