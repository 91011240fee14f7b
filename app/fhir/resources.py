"""The only importer of fhir.resources: R4 payloads use the R4B models (fhirVersion 4.0.1 wire format).

R4B differs from R4 only in resources pharmref does not use; its models accept and emit R4 JSON
for every resource here. GP Connect Update Record (STU3) models are imported in stu3.py.
"""

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryResponse, BundleLink
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.messageheader import MessageHeader
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from app.fhir import validation_speedups  # noqa: F401  (installed before any model validates)

FHIR_VERSION = "4.0.1"

__all__ = [
    "FHIR_VERSION",
    "Bundle",
    "BundleEntry",
    "BundleEntryResponse",
    "BundleLink",
    "CapabilityStatement",
    "CodeableConcept",
    "Coding",
    "Identifier",
    "MessageHeader",
    "OperationOutcome",
    "OperationOutcomeIssue",
    "Organization",
    "Reference",
    "Resource",
    "ServiceRequest",
    "Task",
    "get_fhir_model_class",
]
