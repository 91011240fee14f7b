"""Importing this package registers every table on SQLModel.metadata (Alembic relies on it)."""

from app.models import consultation, delivery, event, organisation, referral, rollup

__all__ = ["consultation", "delivery", "event", "organisation", "referral", "rollup"]
