"""Importing this package registers every table on SQLModel.metadata (Alembic relies on it)."""

from app.models import event, organisation, referral

__all__ = ["event", "organisation", "referral"]
