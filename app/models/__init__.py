"""Importing this package registers every table on SQLModel.metadata (Alembic relies on it)."""

from app.models import consultation, event, organisation, referral

__all__ = ["consultation", "event", "organisation", "referral"]
