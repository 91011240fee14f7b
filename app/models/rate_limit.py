"""Per-client request counters shared by every API process (fixed one-minute windows)."""

from sqlmodel import Field, SQLModel


class RateLimitCounter(SQLModel, table=True):
    """One row per client: the current window and the requests counted in it. A request in a
    later window starts the count again, so the table holds one row per client, not per minute."""

    __tablename__ = "rate_limit_counter"

    client_key: str = Field(primary_key=True, max_length=200)
    window_index: int  # minutes since the Unix epoch
    hits: int
