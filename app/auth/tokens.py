"""JWT minting and verification with python-jose and an explicit algorithm allow-list.

Verification keys come from settings: a PEM public key, a JWKS file, or (for local use only) the
key pair generated on first run under the data directory. The token's header algorithm is checked
against the allow-list before any signature work, so `alg: none` and HS256-signed-with-the-RSA-public-key
tokens are refused whatever the library would do.
"""

import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.exceptions import JOSEError
from pydantic import ValidationError

from app.core.config import settings
from app.core.errors import Unauthorized
from app.db.base import utc_now
from app.models.enums import Role
from app.models.user import User

MAX_TOKEN_BYTES = 8192
_ASYMMETRIC = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}


def _private_key_path() -> Path:
    return settings.jwt_private_key_file or settings.data_dir / "jwt-private.pem"


def _public_key_path() -> Path:
    return settings.jwt_public_key_file or settings.data_dir / "jwt-public.pem"


def ensure_local_key_pair() -> None:
    """Create the local RS256 key pair once (atomic, so concurrent first runs agree on one pair)."""
    private_path, public_path = _private_key_path(), _public_key_path()
    if private_path.exists() and public_path.exists():
        return
    if settings.jwt_public_key_file or settings.jwt_jwks_file:
        return
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    tmp = public_path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(public_pem)
    tmp.replace(public_path)


@lru_cache(maxsize=1)
def _verification_key() -> Any:
    if settings.jwt_jwks_file:
        return json.loads(settings.jwt_jwks_file.read_text())
    if "HS256" in settings.jwt_algorithms and settings.jwt_hs256_secret:
        return settings.jwt_hs256_secret.get_secret_value()
    ensure_local_key_pair()
    # A parsed key object: python-jose would otherwise parse the PEM again for every token.
    return serialization.load_pem_public_key(_public_key_path().read_bytes())


def _key_for(header: dict[str, Any]) -> Any:
    """The one key that may verify this token. python-jose would try every key of a JWKS in turn
    whatever the token's `kid`; pharmref uses the key the `kid` names (or the only key of a
    one-key set), so a token naming an unknown or retired key is refused outright."""
    key = _verification_key()
    if not settings.jwt_jwks_file:
        return key
    keys = [k for k in key.get("keys", []) if isinstance(k, dict)]
    kid = header.get("kid")
    if kid is None:
        matching = keys if len(keys) == 1 else []
    else:
        matching = [k for k in keys if k.get("kid") == kid]
    if len(matching) != 1:
        raise Unauthorized("Bearer token names no known signing key (kid).")
    return matching[0]


@lru_cache(maxsize=4)
def _signing_key(algorithm: str) -> Any:
    # Parsed once: loading an RSA private key (with its consistency checks) costs ~40 ms.
    ensure_local_key_pair()
    return jwk.construct(_private_key_path().read_text(), algorithm)


def reset_key_cache() -> None:
    _verification_key.cache_clear()
    _signing_key.cache_clear()
    _verified.clear()


def create_access_token(
    *,
    subject: str,
    org: str,
    role: Role,
    ttl: timedelta | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Mint a signed token (local development and tests; production tokens come from the IdP)."""
    now = utc_now()
    claims: dict[str, Any] = {
        "sub": subject,
        "org": org,
        "role": str(role),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + (ttl or settings.token_ttl)).timestamp()),
        "jti": str(uuid.uuid4()),
    }
    claims.update(extra or {})
    algorithm = settings.jwt_algorithms[0]
    if algorithm in _ASYMMETRIC:
        return jwt.encode(claims, _signing_key(algorithm), algorithm=algorithm)
    if settings.jwt_hs256_secret is None:
        raise RuntimeError("HS256 configured without PHARMREF_JWT_HS256_SECRET")
    return jwt.encode(claims, settings.jwt_hs256_secret.get_secret_value(), algorithm=algorithm)


def _check_issued_at(iat: object) -> None:
    """python-jose checks only that `iat` reads as a number; a token issued in the future is as
    suspect as one not yet valid by `nbf`."""
    if iat is None:
        return
    try:
        issued = float(iat)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise Unauthorized("Bearer token is invalid or expired.") from exc
    if issued > utc_now().timestamp() + settings.jwt_leeway_seconds:
        raise Unauthorized("Bearer token is invalid or expired (issued in the future).")


def decode_token(token: str) -> User:
    """Verify a bearer token and return the caller; any failure is 401."""
    return _verify(token)[0]


def _verify(token: str) -> tuple[User, int]:
    """The caller and the token's `exp` (verified in full: signature, algorithm, claims)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("Bearer token too large.")
    try:
        header = jwt.get_unverified_header(token)
    except JOSEError as exc:
        raise Unauthorized("Bearer token is malformed.") from exc
    if header.get("alg") not in settings.jwt_algorithms:
        raise Unauthorized("Bearer token algorithm is not accepted.")
    try:
        claims = jwt.decode(
            token,
            _key_for(header),
            algorithms=settings.jwt_algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={
                "require_exp": True,
                "require_iss": True,
                "require_aud": True,
                "leeway": settings.jwt_leeway_seconds,
            },
        )
    except (JOSEError, TypeError, ValueError, OverflowError) as exc:
        # python-jose lets these out of its claim checks (`"exp": null`, `"nbf": Infinity`).
        raise Unauthorized("Bearer token is invalid or expired.") from exc
    _check_issued_at(claims.get("iat"))
    try:
        user = User(subject=claims.get("sub", "unknown"), org=claims["org"], role=claims["role"])
    except KeyError as exc:
        raise Unauthorized("Bearer token lacks a valid org or role claim.") from exc
    except ValidationError as exc:
        if all(error["loc"][:1] == ("subject",) for error in exc.errors()):
            raise Unauthorized("Bearer token has an invalid sub claim.") from exc
        raise Unauthorized("Bearer token lacks a valid org or role claim.") from exc
    return user, int(claims["exp"])


class _VerifiedTokens:
    """Tokens this process verified in full in the last minute, with their callers, so a client
    that sends the same token with every request pays for one RSA verification a minute rather
    than one a request. A remembered token is still refused from the second its `exp` (plus the
    leeway) passes, exactly as verification would refuse it; `nbf` and `iat` only become more
    true with time. The entries belong to the verification settings they were checked under."""

    ttl_seconds = 60.0
    max_entries = 4096

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, tuple[User, int, float, tuple[Any, ...]]] = OrderedDict()

    def get(self, token: str, config: tuple[Any, ...]) -> User | None:
        with self.lock:
            entry = self.entries.get(token)
        if entry is None:
            return None
        user, last_valid_second, remember_until, checked_under = entry
        if checked_under != config or time.monotonic() > remember_until:
            return None
        # python-jose's test: refused once exp < now - leeway, in whole seconds of UTC time.
        if int(time.time()) > last_valid_second:
            return None
        return user

    def put(self, token: str, user: User, last_valid_second: int, config: tuple[Any, ...]) -> None:
        with self.lock:
            self.entries[token] = (
                user,
                last_valid_second,
                time.monotonic() + self.ttl_seconds,
                config,
            )
            self.entries.move_to_end(token)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_verified = _VerifiedTokens()


def _verification_config() -> tuple[Any, ...]:
    return (
        settings.jwt_issuer,
        settings.jwt_audience,
        tuple(settings.jwt_algorithms),
        settings.jwt_jwks_file,
        settings.jwt_public_key_file,
        settings.jwt_hs256_secret,
        settings.jwt_leeway_seconds,
    )


def authenticate(token: str) -> User:
    """`decode_token` for request authentication: a token verified in full within the last minute
    (and not expired since) is not verified again."""
    config = _verification_config()
    user = _verified.get(token, config)
    if user is not None:
        return user
    user, exp = _verify(token)
    _verified.put(token, user, exp + settings.jwt_leeway_seconds, config)
    return user
