import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from jose import jwt

from app.auth import tokens
from app.auth.tokens import authenticate, create_access_token, decode_token, reset_key_cache
from app.core.config import settings
from app.core.errors import Unauthorized
from app.models.enums import Role
from tests.auth.forged import (
    ATTACKS,
    claims,
    hs256_with_public_key,
    other_private_pem,
    private_pem,
    public_jwk,
    rs256,
    tampered,
    valid,
)


def test_create_access_token_round_trips_org_role_and_subject() -> None:
    token = create_access_token(subject="gp-system-1", org="A81001", role=Role.GP_PRACTICE)

    user = decode_token(token)

    assert (user.subject, user.org, user.role) == ("gp-system-1", "A81001", Role.GP_PRACTICE)


def test_create_access_token_signs_rs256_with_issuer_audience_and_ttl() -> None:
    token = create_access_token(
        subject="s", org="FA001", role=Role.PHARMACY, ttl=timedelta(minutes=5)
    )

    header = jwt.get_unverified_header(token)
    body = jwt.get_unverified_claims(token)
    assert header["alg"] == "RS256"
    assert body["iss"] == settings.jwt_issuer
    assert body["aud"] == settings.jwt_audience
    assert body["exp"] - body["iat"] == 300
    assert body["jti"]


def test_decode_token_accepts_a_hand_minted_rs256_token() -> None:
    user = decode_token(rs256(claims(org="FA002", role="pharmacy")))

    assert (user.org, user.role) == ("FA002", Role.PHARMACY)


def test_decode_token_expired_within_leeway_is_accepted() -> None:
    user = decode_token(valid(exp=int(time.time()) - settings.jwt_leeway_seconds // 2))

    assert user.org == "FA001"


@pytest.mark.parametrize(("attack", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_decode_token_attack_raises_unauthorized(attack: Callable[[], str], reason: str) -> None:
    with pytest.raises(Unauthorized) as excinfo:
        decode_token(attack())

    assert reason in excinfo.value.detail
    assert excinfo.value.status_code == 401
    assert excinfo.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_decode_token_tampered_org_is_not_trusted() -> None:
    token = valid()
    assert decode_token(token).org == "FA001"

    with pytest.raises(Unauthorized, match="invalid or expired"):
        decode_token(tampered(token, org="FA002"))


@pytest.fixture
def jwks_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point settings at a JWKS file (written by each test) instead of the local PEM."""
    path = tmp_path / "jwks.json"
    reset_key_cache()
    monkeypatch.setattr(settings, "jwt_jwks_file", path)
    yield path
    monkeypatch.undo()
    reset_key_cache()


def _write_jwks(path: Path, *keys: dict[str, object]) -> None:
    path.write_text(json.dumps({"keys": list(keys)}))


def test_jwks_verifies_token_with_matching_kid(jwks_file: Path) -> None:
    _write_jwks(jwks_file, public_jwk(private_pem(), kid="pharmref-1"))
    token = rs256(claims(org="A81001", role="gp-practice"), headers={"kid": "pharmref-1"})

    user = decode_token(token)

    assert (user.org, user.role) == ("A81001", Role.GP_PRACTICE)


def test_jwks_with_several_keys_verifies_each(jwks_file: Path) -> None:
    second = other_private_pem()
    _write_jwks(
        jwks_file,
        public_jwk(private_pem(), kid="pharmref-1"),
        public_jwk(second, kid="pharmref-2"),
    )
    token = rs256(claims(org="RX1", role="trust"), key_pem=second, headers={"kid": "pharmref-2"})

    assert decode_token(token).org == "RX1"


def test_jwks_refuses_token_signed_by_key_not_in_set(jwks_file: Path) -> None:
    _write_jwks(jwks_file, public_jwk(other_private_pem(), kid="pharmref-1"))
    token = rs256(claims(), headers={"kid": "pharmref-1"})

    with pytest.raises(Unauthorized):
        decode_token(token)


def test_jwks_refuses_attacker_key_claiming_a_known_kid(jwks_file: Path) -> None:
    _write_jwks(jwks_file, public_jwk(private_pem(), kid="pharmref-1"))
    token = rs256(claims(), key_pem=other_private_pem(), headers={"kid": "pharmref-1"})

    with pytest.raises(Unauthorized):
        decode_token(token)


def test_jwks_still_refuses_hs256_confusion(jwks_file: Path) -> None:
    _write_jwks(jwks_file, public_jwk(private_pem(), kid="pharmref-1"))

    with pytest.raises(Unauthorized, match="algorithm is not accepted"):
        decode_token(hs256_with_public_key(claims()))


# ---- remembered verifications (authenticate) ----------------------------------------------------


def test_authenticate_verifies_a_token_once_then_remembers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = valid(org="FA001", role="pharmacy", jti="remember-once")
    verified: list[str] = []
    real = tokens._verify

    def counting(value: str) -> tuple[object, int]:
        verified.append(value)
        return real(value)

    monkeypatch.setattr(tokens, "_verify", counting)

    users = [authenticate(token) for _ in range(3)]

    assert [u.org for u in users] == ["FA001"] * 3
    assert verified == [token]


def test_authenticate_refuses_a_remembered_token_once_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exp = int(time.time()) + 120
    token = valid(exp=exp, jti="remember-expiry")
    assert authenticate(token).org == decode_token(token).org

    later = exp + settings.jwt_leeway_seconds + 1
    monkeypatch.setattr(time, "time", lambda: float(later))
    monkeypatch.setattr(jwt, "timegm", lambda _t: later)

    with pytest.raises(Unauthorized, match="invalid or expired"):
        authenticate(token)


def test_authenticate_rechecks_a_token_under_changed_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = valid(jti="remember-settings")
    authenticate(token)

    monkeypatch.setattr(settings, "jwt_audience", "someone-else")

    with pytest.raises(Unauthorized):
        authenticate(token)


@pytest.mark.parametrize(("attack", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_authenticate_never_remembers_a_refused_token(
    attack: Callable[[], str], reason: str
) -> None:
    token = attack()
    for _ in range(2):
        with pytest.raises(Unauthorized, match=reason):
            authenticate(token)
