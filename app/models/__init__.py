"""Importing this package registers every table on SQLModel.metadata (Alembic relies on it)."""

from app.models import organisation, referral

__all__ = ["organisation", "referral"]
