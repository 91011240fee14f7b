"""JWT attacks against real protected routes: a patient-data read (JSON and FHIR) and a lifecycle
write. tests/auth/forged.py holds the classic attacks (alg none, HS256 keyed with the RSA public
key, expired, not yet valid, wrong audience or issuer, missing claims, tampering, another key, an
embedded JWK, oversized); this module adds the rest and runs them all where they matter. Every
attack is a 401 with `WWW-Authenticate: Bearer`, never a 500, shows no patient data and changes
nothing."""

import json
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jose import jwt
from sqlmodel import Session

from app.auth.tokens import _signing_key, decode_token, reset_key_cache
from app.core.config import settings as app_settings
from app.core.errors import Unauthorized
from app.models.enums import Role
from app.models.referral import Referral
from app.services.validation import ods_code_is_valid
from tests.auth.forged import (
    ALGORITHM,
    ATTACKS,
    CLAIMS,
    INVALID,
    MALFORMED,
    TOO_LARGE,
    b64url_json,
    claims,
    other_private_pem,
    private_pem,
    public_jwk,
    rs256,
    unsigned,
    valid,
)
from tests.factories import FAMILY_NAME, NHS_NUMBERS, make_referral

ISSUED_IN_THE_FUTURE = "issued in the future"
INVALID_SUB = "invalid sub claim"
UNKNOWN_KEY = "no known signing key"


def _now() -> int:
    return int(time.time())


def _signature_swap() -> str:
    """The header and payload of one token with the signature of another (same key)."""
    header, payload, _ = valid(org="FA002").split(".")
    return f"{header}.{payload}.{valid().split('.')[2]}"


def _alg_header_swap() -> str:
    """A valid RS256 token whose header is rewritten to say RS512, signature kept."""
    _, payload, signature = valid().split(".")
    return f"{b64url_json({'alg': 'RS512', 'typ': 'JWT'})}.{payload}.{signature}"


def _payload_not_json() -> str:
    header, _, signature = valid().split(".")
    return f"{header}.bm90LWpzb24.{signature}"


ATTACKER_KEY = other_private_pem()


def _jku_attacker() -> str:
    """Signed by an attacker key, with `jku` pointing at the attacker's key set: never fetched."""
    headers = {"jku": "https://attacker.example/jwks.json", "kid": "evil"}
    return rs256(claims(), key_pem=ATTACKER_KEY, headers=headers)


MORE_ATTACKS: dict[str, tuple[Callable[[], str], str]] = {
    "issued-in-the-future": (lambda: valid(iat=_now() + 3600), ISSUED_IN_THE_FUTURE),
    "nbf-and-iat-in-the-future": (
        lambda: valid(iat=_now() + 3600, nbf=_now() + 3600),
        INVALID,
    ),
    "alg-hs512": (lambda: unsigned(claims(), alg="HS512"), ALGORITHM),
    "alg-header-swapped-to-rs512": (_alg_header_swap, ALGORITHM),
    "signature-from-another-token": (_signature_swap, INVALID),
    "payload-not-json": (_payload_not_json, INVALID),
    "jku-attacker-key-set": (_jku_attacker, INVALID),
    "no-claims-at-all": (lambda: rs256({}), INVALID),
    "audience-list-without-pharmref": (lambda: valid(aud=["someone-else"]), INVALID),
    "exp-null": (lambda: rs256(claims(exp=None)), INVALID),
    "exp-infinity": (lambda: rs256(claims(exp=float("inf"))), INVALID),
    "iat-not-a-number": (lambda: rs256(claims(iat=[1])), INVALID),
    "org-not-an-ods-code": (lambda: valid(org="FA001; DROP"), CLAIMS),
    "org-too-long": (lambda: valid(org="FA001FA001FA001"), CLAIMS),
    "org-a-number": (lambda: valid(org=1), CLAIMS),
    "role-a-list": (lambda: valid(role=["admin"]), CLAIMS),
    "sub-too-long": (lambda: valid(sub="s" * 201), INVALID_SUB),
    "sub-with-nul": (lambda: valid(sub="system\x00admin"), INVALID_SUB),
    "oversized-100kb": (lambda: "e" * 100_000, TOO_LARGE),
    "oversized-signed-claim": (lambda: valid(pad="x" * 20_000), TOO_LARGE),
    "header-only": (lambda: b64url_json({"alg": "RS256"}), MALFORMED),
}
ALL_ATTACKS = {**ATTACKS, **MORE_ATTACKS}


@dataclass(frozen=True)
class Probe:
    """A real route that reads patient data or changes a referral; the token is a pharmacy's at
    FA001, the referral's receiving pharmacy, so a valid token gets through."""

    method: str
    path: str
    headers: dict[str, str]
    fhir: bool = False

    def send(self, client: TestClient, referral: Referral, token: str) -> httpx.Response:
        response: httpx.Response = client.request(
            self.method,
            self.path.format(id=referral.id),
            headers={**self.headers, "Authorization": f"Bearer {token}"},
        )
        return response


PROBES = {
    "json-read": Probe("GET", "/api/v1/referrals/{id}", {}),
    "json-write": Probe("POST", "/api/v1/referrals/{id}/accept", {"If-Match": 'W/"1"'}),
    "fhir-read": Probe("GET", "/fhir/ServiceRequest/{id}", {}, fhir=True),
}


@pytest.fixture
def referral(session: Session) -> Referral:
    return make_referral(session)


def assert_refused(response: httpx.Response, probe: Probe, reason: str) -> None:
    assert NHS_NUMBERS[0] not in response.text
    assert FAMILY_NAME not in response.text
    body = response.json()
    if reason == TOO_LARGE and response.status_code == 431:
        # A header size limit in front of the token check may refuse it first: also clear.
        assert body.get("error") or body.get("resourceType") == "OperationOutcome", body
        return
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    if probe.fhir:
        assert body["resourceType"] == "OperationOutcome"
        assert reason in body["issue"][0]["diagnostics"]
    else:
        assert body["error"] == "Unauthorized"
        assert reason in body["detail"]


@pytest.mark.parametrize("probe", PROBES.values(), ids=PROBES.keys())
def test_valid_token_reaches_probe(client: TestClient, referral: Referral, probe: Probe) -> None:
    response = probe.send(client, referral, valid())

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("attack", "reason"), ALL_ATTACKS.values(), ids=ALL_ATTACKS.keys())
@pytest.mark.parametrize("probe", PROBES.values(), ids=PROBES.keys())
def test_attack_token_is_refused_with_401_and_changes_nothing(
    client: TestClient,
    session: Session,
    referral: Referral,
    probe: Probe,
    attack: Callable[[], str],
    reason: str,
) -> None:
    token = attack()
    response = probe.send(client, referral, token)

    if len(token) > app_settings.max_header_bytes:
        # Larger than the request-header limit: refused before any token parsing (431).
        assert response.status_code == 431, response.text
        assert NHS_NUMBERS[0] not in response.text
    else:
        assert_refused(response, probe, reason)
    session.refresh(referral)
    assert (referral.status, referral.version) == ("received", 1)


def test_token_claims_are_normalised_to_an_upper_case_ods_code() -> None:
    assert decode_token(valid(org=" fa001 ")).org == "FA001"


# ---- key sets: the token's kid picks the one key that may verify it ----------------------------


@pytest.fixture
def jwks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Verify with a JWKS file; the test writes its keys."""
    path = tmp_path / "jwks.json"

    def write(*keys: dict[str, Any]) -> None:
        path.write_text(json.dumps({"keys": list(keys)}))
        reset_key_cache()

    monkeypatch.setattr(app_settings, "jwt_jwks_file", path)
    yield write
    monkeypatch.undo()
    reset_key_cache()


SECOND_KEY = other_private_pem()


def _two_keys(write: Callable[..., None]) -> None:
    write(public_jwk(private_pem(), kid="pharmref-1"), public_jwk(SECOND_KEY, kid="pharmref-2"))


KEY_SET_CASES: dict[
    str, tuple[Callable[[Callable[..., None]], None], Callable[[], str], str | None]
] = {
    "kid-names-the-signing-key": (
        _two_keys,
        lambda: rs256(claims(), headers={"kid": "pharmref-1"}),
        None,
    ),
    "kid-names-the-second-key": (
        _two_keys,
        lambda: rs256(claims(), key_pem=SECOND_KEY, headers={"kid": "pharmref-2"}),
        None,
    ),
    "one-key-set-without-kid": (
        lambda write: write(public_jwk(private_pem(), kid="pharmref-1")),
        lambda: rs256(claims()),
        None,
    ),
    "unknown-kid": (
        _two_keys,
        lambda: rs256(claims(), headers={"kid": "retired-2019"}),
        UNKNOWN_KEY,
    ),
    "no-kid-with-two-keys": (_two_keys, lambda: rs256(claims()), UNKNOWN_KEY),
    "kid-of-another-key-in-the-set": (
        _two_keys,
        lambda: rs256(claims(), headers={"kid": "pharmref-2"}),
        INVALID,
    ),
    "kid-of-a-key-signed-by-an-attacker": (
        _two_keys,
        lambda: rs256(claims(), key_pem=ATTACKER_KEY, headers={"kid": "pharmref-1"}),
        INVALID,
    ),
    "kid-not-a-string": (
        _two_keys,
        lambda: rs256(claims(), headers={"kid": ["pharmref-1"]}),
        UNKNOWN_KEY,
    ),
}


@pytest.mark.parametrize(
    ("keys", "token", "reason"), KEY_SET_CASES.values(), ids=KEY_SET_CASES.keys()
)
def test_key_set_kid_selects_the_verifying_key(
    client: TestClient,
    referral: Referral,
    jwks: Callable[..., None],
    keys: Callable[[Callable[..., None]], None],
    token: Callable[[], str],
    reason: str | None,
) -> None:
    keys(jwks)
    probe = PROBES["json-read"]

    response = probe.send(client, referral, token())

    if reason is None:
        assert response.status_code == 200, response.text
    else:
        assert_refused(response, probe, reason)


# ---- properties: whatever the token, decode_token answers a caller or a 401 -------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
CLAIM_NAMES = ["sub", "org", "role", "iss", "aud", "exp", "nbf", "iat", "jti"]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=st.text(alphabet=string.printable, max_size=400))
def test_any_text_as_a_token_is_a_401(text: str) -> None:
    with pytest.raises(Unauthorized):
        decode_token(text)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(changes=st.dictionaries(st.sampled_from(CLAIM_NAMES), JSON_VALUES, min_size=1, max_size=4))
def test_signed_token_with_any_claim_values_is_a_caller_or_a_401(changes: dict[str, Any]) -> None:
    token = jwt.encode(claims(**changes), _signing_key("RS256"), algorithm="RS256")
    try:
        user = decode_token(token)
    except Unauthorized:
        return
    assert ods_code_is_valid(user.org)
    assert user.role in set(Role)
    assert 0 < len(user.subject) <= 200
