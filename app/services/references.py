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
    # Ten symbols of a 32-letter alphabet are 50 random bits: one read of the system's random
    # source, five bits a symbol (each symbol as likely as a secrets.choice would make it).
    bits = int.from_bytes(secrets.token_bytes(7))
    chars = "".join(_REFERENCE_ALPHABET[(bits >> (5 * i)) & 31] for i in range(10))
    return f"{REFERENCE_PREFIX[service]}-{chars[:5]}-{chars[5:]}"
