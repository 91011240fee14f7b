"""Dashboard sign-in: the token is verified as the API verifies it, kept in a cookie that only the
dashboard reads, and the sign-in form is protected against cross-site posts."""

import re
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from app.auth.cookies import CSRF_COOKIE, SESSION_COOKIE
from app.auth.tokens import create_access_token
from app.main import app
from app.models.enums import Role
from tests.auth.forged import ATTACKS, tampered
from tests.helpers import token_for

ANALYST = (Role.ICB_ANALYST, "QXX")


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header by cookie name (the raw header, attributes included)."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def attributes(header: str) -> dict[str, str]:
    parts = [p.strip() for p in header.split(";")[1:]]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts}


def open_form(client: TestClient) -> str:
    response = client.get("/dashboard/login")
    assert response.status_code == 200, response.text
    match = re.search(r'name="form_token" value="([^"]+)"', response.text)
    assert match
    return match.group(1)


def sign_in(
    client: TestClient, token: str, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    form_token = open_form(client)
    response: httpx.Response = client.post(
        "/dashboard/login",
        data={"token": token, "form_token": form_token},
        headers=headers,
        follow_redirects=False,
    )
    return response


def assert_refused(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Sign-in refused" in response.text
    assert message in response.text
    assert SESSION_COOKIE not in set_cookies(response)


def test_dashboard_without_sign_in_redirects_to_the_login_page(client: TestClient) -> None:
    response = client.get("/dashboard", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"


def test_login_page_carries_a_form_token_matching_a_strict_cookie(client: TestClient) -> None:
    response = client.get("/dashboard/login")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<textarea" in response.text
    form_token = re.search(r'name="form_token" value="([^"]+)"', response.text)
    assert form_token
    cookie = set_cookies(response)[CSRF_COOKIE]
    assert cookie.startswith(f"{CSRF_COOKIE}={form_token.group(1)};")
    flags = attributes(cookie)
    assert flags["path"] == "/dashboard/login"
    assert flags["samesite"].lower() == "strict"
    assert "httponly" in flags


@pytest.mark.parametrize("role", [Role.ICB_ANALYST, Role.ADMIN])
def test_sign_in_sets_an_httponly_strict_dashboard_cookie_expiring_with_the_token(
    client: TestClient, role: Role
) -> None:
    token = create_access_token(subject="analyst", org="QXX", role=role, ttl=timedelta(minutes=90))

    response = sign_in(client, token)

    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"
    cookie = set_cookies(response)[SESSION_COOKIE]
    assert cookie.startswith(f"{SESSION_COOKIE}={token};")
    flags = attributes(cookie)
    assert flags["path"] == "/dashboard"
    assert flags["samesite"].lower() == "strict"
    assert "httponly" in flags
    assert "secure" not in flags  # plain http (the test client); see the https test
    assert 90 * 60 - 30 <= int(flags["max-age"]) <= 90 * 60
    assert "expires" in flags
    assert set_cookies(response)[CSRF_COOKIE].startswith(f'{CSRF_COOKIE}="";')
    page = client.get("/dashboard")
    assert page.status_code == 200, page.text
    assert f"Signed in: {role} QXX" in page.text


def test_sign_in_over_https_sets_a_secure_cookie(client: TestClient) -> None:
    client.base_url = httpx.URL("https://testserver")

    response = sign_in(client, token_for(*ANALYST))

    assert response.status_code == 303, response.text
    assert "secure" in attributes(set_cookies(response)[SESSION_COOKIE])


@pytest.mark.parametrize(("build", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_sign_in_refuses_every_token_the_api_refuses(
    client: TestClient, build: Callable[[], str], reason: str
) -> None:
    assert_refused(sign_in(client, build()), 401, reason)


def test_sign_in_refuses_an_expired_analyst_token(client: TestClient) -> None:
    expired = create_access_token(
        subject="analyst", org="QXX", role=Role.ICB_ANALYST, ttl=timedelta(minutes=-5)
    )

    assert_refused(sign_in(client, expired), 401, "invalid or expired")


def test_sign_in_refuses_a_token_with_the_role_rewritten(client: TestClient) -> None:
    forged = tampered(token_for(Role.PHARMACY, "FA001"), role="admin")

    assert_refused(sign_in(client, forged), 401, "invalid or expired")


@pytest.mark.parametrize("role", [Role.GP_PRACTICE, Role.PHARMACY, Role.TRUST, Role.NHS111])
def test_sign_in_refuses_roles_other_than_analyst_and_admin(client: TestClient, role: Role) -> None:
    assert_refused(sign_in(client, token_for(role, "A81001")), 403, "icb-analyst and admin")


def test_sign_in_with_an_empty_token_asks_for_one(client: TestClient) -> None:
    assert_refused(sign_in(client, "   "), 401, "Paste a token.")


def test_sign_in_without_the_form_cookie_is_refused(client: TestClient) -> None:
    form_token = open_form(client)
    client.cookies.clear()

    response = client.post(
        "/dashboard/login",
        data={"token": token_for(*ANALYST), "form_token": form_token},
        follow_redirects=False,
    )

    assert_refused(response, 403, "The sign-in form has expired")


def test_sign_in_with_a_different_form_token_is_refused(client: TestClient) -> None:
    open_form(client)

    response = client.post(
        "/dashboard/login",
        data={"token": token_for(*ANALYST), "form_token": "guessed"},
        follow_redirects=False,
    )

    assert_refused(response, 403, "The sign-in form has expired")


def test_sign_in_posted_from_another_site_is_refused(client: TestClient) -> None:
    response = sign_in(client, token_for(*ANALYST), headers={"Origin": "https://attacker.example"})

    assert_refused(response, 403, "another site")


@pytest.mark.parametrize("origin", ["http://testserver", "null"])
def test_sign_in_from_the_same_origin_or_a_null_origin_is_accepted(
    client: TestClient, origin: str
) -> None:
    response = sign_in(client, token_for(*ANALYST), headers={"Origin": origin})

    assert response.status_code == 303, response.text


@pytest.mark.parametrize(
    "url", ["/api/v1/organisations/FA001", "/fhir/Organization/FA001", "/api/v1/referrals"]
)
def test_the_dashboard_cookie_is_not_accepted_by_the_api(client: TestClient, url: str) -> None:
    cookie = f"{SESSION_COOKIE}={token_for(Role.ADMIN, 'QXX')}"

    response = client.get(url, headers={"Cookie": cookie})

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_expired_session_cookie_is_cleared_and_sends_the_analyst_to_sign_in(
    client: TestClient,
) -> None:
    expired = create_access_token(
        subject="analyst", org="QXX", role=Role.ICB_ANALYST, ttl=timedelta(seconds=-120)
    )

    response = client.get(
        "/dashboard", headers={"Cookie": f"{SESSION_COOKIE}={expired}"}, follow_redirects=False
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?expired=1"
    cleared = attributes(set_cookies(response)[SESSION_COOKIE])
    assert cleared["max-age"] == "0"
    assert cleared["path"] == "/dashboard"
    notice = client.get(response.headers["location"])
    assert "Your sign-in has ended" in notice.text


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: token_for(Role.PHARMACY, "FA001"), id="pharmacy-role"),
        pytest.param(lambda: tampered(token_for(*ANALYST), org="QYY"), id="tampered"),
        pytest.param(lambda: "not-a-jwt", id="garbage"),
    ],
)
def test_a_session_cookie_the_dashboard_would_not_issue_is_refused(
    client: TestClient, token: Callable[[], str]
) -> None:
    response = client.get(
        "/dashboard", headers={"Cookie": f"{SESSION_COOKIE}={token()}"}, follow_redirects=False
    )

    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/login")


def test_sign_out_clears_the_cookie(client: TestClient) -> None:
    assert sign_in(client, token_for(*ANALYST)).status_code == 303

    response = client.post("/dashboard/logout", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    cleared = attributes(set_cookies(response)[SESSION_COOKIE])
    assert (cleared["max-age"], cleared["path"]) == ("0", "/dashboard")
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/login"])
def test_pages_forbid_scripts_and_outside_resources(client: TestClient, path: str) -> None:
    client.cookies.set(SESSION_COOKIE, token_for(*ANALYST), path="/dashboard")

    response = client.get(path)

    assert response.status_code == 200, response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "style-src 'self'" in policy
    assert "script" not in policy
    assert "<script" not in response.text
    assert re.findall(r'(?:src|href|action)="(?!/|#)[^"]*"', response.text) == []


def test_stylesheet_is_served_by_the_app(client: TestClient) -> None:
    response = client.get("/dashboard/dashboard.css")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert ".suppressed" in response.text
    assert "@import" not in response.text
    assert "url(" not in response.text


def test_dashboard_routes_are_not_in_the_api_schema() -> None:
    assert not [path for path in app.openapi()["paths"] if path.startswith("/dashboard")]
