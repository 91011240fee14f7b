"""Authentication and role dependencies."""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.tokens import authenticate
from app.core.errors import Forbidden, Unauthorized
from app.models.enums import Role
from app.models.user import User

_bearer = HTTPBearer(auto_error=False, description="A JWT with `org` (ODS code) and `role` claims.")


async def get_current_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("A bearer token is required.", headers={"WWW-Authenticate": "Bearer"})
    return authenticate(credentials.credentials)


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: Role) -> Callable[[User], Coroutine[Any, Any, User]]:
    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden(f"The {user.role} role may not use this operation.")
        return user

    return check


REFERRER_ROLES = (Role.GP_PRACTICE, Role.NHS111, Role.TRUST, Role.PHARMACY)
PATIENT_DATA_ROLES = (Role.GP_PRACTICE, Role.NHS111, Role.TRUST, Role.PHARMACY, Role.ADMIN)
# Pushed messages go to referrers' endpoints; admin watches (and retries) them all.
DELIVERY_ROLES = (*REFERRER_ROLES, Role.ADMIN)

Referrer = Annotated[User, Depends(require_role(*REFERRER_ROLES))]
PatientDataReader = Annotated[User, Depends(require_role(*PATIENT_DATA_ROLES))]
Pharmacy = Annotated[User, Depends(require_role(Role.PHARMACY))]
DeliveryViewer = Annotated[User, Depends(require_role(*DELIVERY_ROLES))]
