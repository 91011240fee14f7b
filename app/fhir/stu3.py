"""The only importer of fhir.resources.STU3: GP Connect Update Record (ITK3) messages are STU3.

GP Connect's Update Record capability uses the STU3 CareConnect-GPC profiles (nhs-interop.md
section 2); every other FHIR payload pharmref reads or writes is R4 (resources.py).
"""

from fhir.resources.STU3 import get_fhir_model_class
from fhir.resources.STU3.bundle import Bundle

FHIR_VERSION = "3.0.1"

__all__ = ["FHIR_VERSION", "Bundle", "get_fhir_model_class"]
