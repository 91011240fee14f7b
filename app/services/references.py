"""Short, human-readable referral references a GP can quote (Crockford base32, no I, L, O, U)."""

import secrets

from app.models.enums import Service

REFERENCE_PREFIX = {
    Service.PHARMACY_FIRST: "PF",
    Service.BLOOD_PRESSURE: "BP",
    Service.CONTRACEPTION: "PC",
    Service.DMS: "DM",
}
_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U


def new_reference(service: Service) -> str:
    chars = "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(10))
    return f"{REFERENCE_PREFIX[service]}-{chars[:5]}-{chars[5:]}"
