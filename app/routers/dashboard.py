"""The ICB uptake dashboard (HTML, server-rendered) and its browser sign-in; not part of the API
schema. Only these routes read the session cookie (app/auth/cookies.py)."""

from functools import lru_cache
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from app.auth import cookies
from app.core.errors import AppError, Forbidden
from app.db.session import SessionDep
from app.models.user import User
from app.services import dashboard as dashboard_service

router = APIRouter(prefix=cookies.DASHBOARD_PATH, include_in_schema=False)

# No scripts at all; styles only from the app's own stylesheet; forms post only to the app.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_environment = Environment(
    loader=PackageLoader("app", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(
    figure=dashboard_service.format_figure,
    long_date=dashboard_service.long_date,
    month=dashboard_service.month_label,
    month_end=dashboard_service.month_end,
)
templates = Jinja2Templates(env=_environment)

SessionToken = Annotated[str | None, Cookie(alias=cookies.SESSION_COOKIE)]
LoginFormToken = Annotated[str | None, Cookie(alias=cookies.CSRF_COOKIE)]


def _html(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers={"Content-Security-Policy": CSP}
    )


def _login_page(request: Request, *, status_code: int = 200, **context: Any) -> Response:
    form_token = cookies.new_form_token()
    response = _html(
        request,
        "login.html",
        {"user": None, "error": None, "notice": None, "form_token": form_token, **context},
        status_code,
    )
    response.set_cookie(
        cookies.CSRF_COOKIE,
        form_token,
        max_age=cookies.CSRF_TTL_SECONDS,
        path=cookies.LOGIN_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def _to_login(*, expired: bool) -> Response:
    response = RedirectResponse(
        cookies.LOGIN_PATH + ("?expired=1" if expired else ""), status_code=303
    )
    if expired:
        response.delete_cookie(cookies.SESSION_COOKIE, path=cookies.DASHBOARD_PATH)
    return response


@router.get("", response_class=HTMLResponse)
def read_dashboard(request: Request, session: SessionDep, token: SessionToken = None) -> Response:
    """The uptake dashboard for the signed-in analyst; without a valid sign-in, the login page;
    a caller the statistics service refuses gets a page saying so (403)."""
    user: User | None = cookies.dashboard_user(token)
    if user is None:
        return _to_login(expired=token is not None)
    try:
        page = dashboard_service.build_page(
            session=session, caller=user, params=dict(request.query_params)
        )
    except Forbidden as error:  # e.g. an icb-analyst token naming no ICB in the directory
        return _html(request, "forbidden.html", {"user": user, "detail": error.detail}, 403)
    return _html(
        request, "dashboard.html", {"user": user, "page": page}, 422 if page.errors else 200
    )


@router.get("/login", response_class=HTMLResponse)
def read_login(request: Request, expired: str | None = None) -> Response:
    """The sign-in form: paste an API token."""
    notice = "Your sign-in has ended; sign in again." if expired else None
    return _login_page(request, notice=notice)


@router.post("/login", response_class=HTMLResponse)
def sign_in(
    request: Request,
    token: Annotated[str, Form()] = "",
    form_token: Annotated[str, Form()] = "",
    expected: LoginFormToken = None,
    origin: Annotated[str | None, Header()] = None,
) -> Response:
    """Check the pasted token as the API would and keep it in the dashboard's session cookie."""
    try:
        cookies.check_form_token(
            submitted=form_token,
            expected=expected,
            origin=origin,
            own=f"{request.url.scheme}://{request.url.netloc}",
        )
        _user, expires = cookies.verify_dashboard_token(token)
    except AppError as error:
        return _login_page(request, status_code=error.status_code, error=error.detail)
    response = RedirectResponse(cookies.DASHBOARD_PATH, status_code=303)
    response.set_cookie(
        cookies.SESSION_COOKIE,
        token.strip(),
        max_age=cookies.seconds_left(expires),
        expires=expires,
        path=cookies.DASHBOARD_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(cookies.CSRF_COOKIE, path=cookies.LOGIN_PATH)
    return response


@router.post("/logout")
def sign_out() -> Response:
    """Forget the dashboard sign-in."""
    response = RedirectResponse(cookies.LOGIN_PATH, status_code=303)
    response.delete_cookie(cookies.SESSION_COOKIE, path=cookies.DASHBOARD_PATH)
    return response


@lru_cache(maxsize=1)
def _stylesheet() -> str:
    return files("app").joinpath("static/dashboard.css").read_text(encoding="utf-8")


@router.get("/dashboard.css")
def read_stylesheet() -> Response:
    """The dashboard's stylesheet (served by the app: no CDN)."""
    return Response(_stylesheet(), media_type="text/css")
