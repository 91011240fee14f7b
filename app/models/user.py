"""The authenticated caller: a system acting for an organisation in a role (no password store).

The claims are checked as strictly as any other input, because they are stored (event actor,
consultation author, endpoint owner) in columns of fixed size."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, StringConstraints

from app.models.enums import Role
from app.models.types import OdsCode
from app.services.validation import check_no_nul

Subject = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(check_no_nul)
]


class User(BaseModel):
    subject: Subject
    org: OdsCode
    role: Role
