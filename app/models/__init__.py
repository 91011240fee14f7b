"""Importing this package registers every table on SQLModel.metadata (Alembic relies on it)."""

from app.models import (
    audit,
    consultation,
    delivery,
    event,
    organisation,
    rate_limit,
    referral,
    rollup,
)

__all__ = [
    "audit",
    "consultation",
    "delivery",
    "event",
    "organisation",
    "rate_limit",
    "referral",
    "rollup",
]
