"""The authenticated caller: a system acting for an organisation in a role (no password store)."""

from pydantic import BaseModel

from app.models.enums import Role


class User(BaseModel):
    subject: str
    org: str
    role: Role
