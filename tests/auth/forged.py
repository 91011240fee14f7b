"""Hand-built JWTs for the auth tests: valid ones signed with the local key, and attacks."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from app.auth.tokens import (
    MAX_TOKEN_BYTES,
    _private_key_path,
    _public_key_path,
    create_access_token,
    ensure_local_key_pair,
)
from app.core.config import settings
from app.models.enums import Role


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def claims(**overrides: Any) -> dict[str, Any]:
    """The claims create_access_token would mint for a pharmacy at FA001, with overrides."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "test:pharmacy:FA001",
        "org": "FA001",
        "role": str(Role.PHARMACY),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
    }
    base.update(overrides)
    return base


def without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in claims().items() if k not in names}


def private_pem() -> str:
    ensure_local_key_pair()
    return _private_key_path().read_text()


def public_pem() -> str:
    ensure_local_key_pair()
    return _public_key_path().read_text()


def other_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_jwk(private_key_pem: str, *, kid: str) -> dict[str, Any]:
    """The public half of an RSA key as a JWK (RFC 7517) with a key id."""
    public = jwk.construct(private_key_pem, "RS256").public_key().to_dict()
    return {**public, "kid": kid, "use": "sig", "alg": "RS256"}


def rs256(
    payload: Mapping[str, Any],
    *,
    key_pem: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    return jwt.encode(dict(payload), key_pem or private_pem(), algorithm="RS256", headers=headers)


def unsigned(payload: Mapping[str, Any], alg: str = "none") -> str:
    """An `alg: none` token: header and payload, empty signature."""
    return f"{b64url_json({'alg': alg, 'typ': 'JWT'})}.{b64url_json(dict(payload))}."


def hs256_with_public_key(payload: Mapping[str, Any]) -> str:
    """Algorithm confusion: HMAC-SHA256 keyed with the server's RSA public key PEM.

    Built by hand because python-jose refuses a PEM public key as an HMAC secret when signing."""
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT'})}.{b64url_json(dict(payload))}"
    mac = hmac.new(public_pem().encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tampered(token: str, **changes: Any) -> str:
    """Rewrite claims in a signed token's payload segment and keep the original signature."""
    header, payload, signature = token.split(".")
    body = json.loads(b64url_decode(payload))
    body.update(changes)
    return f"{header}.{b64url_json(body)}.{signature}"


def valid(**extra: Any) -> str:
    return create_access_token(
        subject="test:pharmacy:FA001", org="FA001", role=Role.PHARMACY, extra=extra or None
    )


def _tampered_org() -> str:
    return tampered(valid(), org="FA002")


def _different_key() -> str:
    return rs256(claims(), key_pem=other_private_pem())


def _embedded_attacker_jwk() -> str:
    """Signed by an attacker key that the header offers as its own verification key."""
    attacker = other_private_pem()
    return rs256(claims(), key_pem=attacker, headers={"jwk": public_jwk(attacker, kid="evil")})


def _oversized() -> str:
    token = valid(padding="x" * MAX_TOKEN_BYTES)
    assert len(token) > MAX_TOKEN_BYTES
    return token


MALFORMED = "malformed"
ALGORITHM = "algorithm is not accepted"
INVALID = "invalid or expired"
CLAIMS = "lacks a valid org or role"
TOO_LARGE = "too large"

# Each attack: a token builder (called lazily, so the local key pair exists first) and the reason
# decode_token gives when it refuses the token with 401.
ATTACKS: dict[str, tuple[Callable[[], str], str]] = {
    "garbage": (lambda: "not-a-jwt", MALFORMED),
    "three-garbage-segments": (lambda: "abc.def.ghi", MALFORMED),
    "alg-none": (lambda: unsigned(claims()), ALGORITHM),
    "alg-None": (lambda: unsigned(claims(), alg="None"), ALGORITHM),
    "alg-NONE": (lambda: unsigned(claims(), alg="NONE"), ALGORITHM),
    "alg-rs256-empty-signature": (lambda: unsigned(claims(), alg="RS256"), INVALID),
    "hs256-with-public-key": (lambda: hs256_with_public_key(claims()), ALGORITHM),
    "expired": (lambda: valid(exp=int(time.time()) - settings.jwt_leeway_seconds - 60), INVALID),
    "not-yet-valid": (
        lambda: valid(nbf=int(time.time()) + settings.jwt_leeway_seconds + 600),
        INVALID,
    ),
    "wrong-audience": (lambda: valid(aud="someone-else"), INVALID),
    "wrong-issuer": (lambda: valid(iss="https://issuer.example"), INVALID),
    "missing-exp": (lambda: rs256(without("exp")), INVALID),
    "missing-iss": (lambda: rs256(without("iss")), INVALID),
    "missing-aud": (lambda: rs256(without("aud")), INVALID),
    "missing-org": (lambda: rs256(without("org")), CLAIMS),
    "null-org": (lambda: valid(org=None), CLAIMS),
    "missing-role": (lambda: rs256(without("role")), CLAIMS),
    "unknown-role": (lambda: valid(role="superuser"), CLAIMS),
    "tampered-payload": (_tampered_org, INVALID),
    "different-rsa-key": (_different_key, INVALID),
    "embedded-attacker-jwk": (_embedded_attacker_jwk, INVALID),
    "oversized": (_oversized, TOO_LARGE),
}
