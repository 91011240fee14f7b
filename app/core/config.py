"""Settings, read once from PHARMREF_* environment variables (or a .env file)."""

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, Field, NonNegativeInt, PositiveFloat, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.models.enums import Service


def _default_due_hours() -> dict[Service, int]:
    return {
        Service.PHARMACY_FIRST: 24,
        Service.BLOOD_PRESSURE: 7 * 24,
        Service.CONTRACEPTION: 7 * 24,
        Service.DMS: 72,
    }


def _default_no_contact_grace_hours() -> dict[Service, int]:
    return {
        Service.PHARMACY_FIRST: 24,
        Service.BLOOD_PRESSURE: 7 * 24,
        Service.CONTRACEPTION: 7 * 24,
        Service.DMS: 72,
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHARMREF_", env_file=".env", extra="ignore")

    environment: str = "development"
    database_url: str = Field(
        default="sqlite:///./pharmref.db",
        validation_alias=AliasChoices("PHARMREF_DATABASE_URL", "DATABASE_URL"),
    )
    db_pool_size: int = 20
    db_max_overflow: int = 0
    db_pool_timeout_seconds: float = 5.0
    db_connect_timeout_seconds: int = Field(default=5, ge=2)  # libpq counts whole seconds, min 2
    db_statement_timeout_seconds: float = Field(default=30.0, ge=0)  # 0: no limit
    data_dir: Path = Path("./var")

    jwt_issuer: str = "pharmref-local"
    jwt_audience: str = "pharmref"
    jwt_algorithms: list[str] = ["RS256"]
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_private_key_file: Path | None = None
    jwt_hs256_secret: SecretStr | None = None
    jwt_leeway_seconds: int = 30
    token_ttl: timedelta = timedelta(hours=8)

    max_body_bytes: int = 1_000_000
    max_header_bytes: int = Field(default=16_384, ge=1024)  # all request headers together
    log_level: str = "info"
    # Requests per client per minute (fixed window, counted in the database); 0: no limit.
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    metrics_token: SecretStr | None = None  # when set, GET /metrics needs it as a bearer token
    metrics_cache_seconds: float = Field(default=30.0, ge=0)  # database gauges per process
    supported_bars_versions: list[str] = ["1.0.0-beta", "1.0.0", "1.1.0", "1.1.1", "1.1.2"]
    due_hours: dict[Service, int] = Field(default_factory=_default_due_hours)
    # A received referral is closed as no-contact this long after its due time; a service left
    # out is never closed automatically.
    no_contact_grace_hours: dict[Service, NonNegativeInt] = Field(
        default_factory=_default_no_contact_grace_hours
    )
    sweep_interval_seconds: float = Field(default=60.0, ge=0)  # 0: no in-process sweep
    sweep_batch_size: int = Field(default=100, ge=1)
    abpm_return_days: int = 7
    delivery_max_attempts: int = 8
    delivery_base_backoff_seconds: float = 5.0
    delivery_max_backoff_seconds: float = 3600.0
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    delivery_batch_size: int = Field(default=50, ge=1)
    delivery_concurrency: int = Field(default=16, ge=1)  # requests in flight per worker
    delivery_poll_interval_seconds: float = Field(default=1.0, gt=0)
    delivery_in_process: bool = False  # also run the delivery worker in each API process
    delivery_allow_http: bool = True  # plain http only to loopback addresses; https anywhere
    page_size_default: int = 50
    page_size_max: int = 200
    public_base_url: str = "http://localhost:8000"
    # The ICB's uptake target drawn on the dashboard: referrals per 1,000 registered patients per
    # month. One number for any selection, or one per service as JSON ({"pharmacy-first": 3.0});
    # with per-service targets the all-services target is their sum. Unset: no target line.
    target_per_1000: PositiveFloat | dict[Service, PositiveFloat] | None = None
    # Statistics for the icb-analyst role (admin sees exact counts): counts from suppress_from to
    # suppress_to are suppressed, the others rounded to the nearest round_to
    # (app/services/disclosure.py); a question may span at most stats_max_days and give at most
    # stats_max_rows rows.
    suppress_from: int = Field(default=1, ge=1)
    suppress_to: int = Field(default=7, ge=0)
    round_to: int = Field(default=5, ge=1)
    stats_max_days: int = Field(default=1096, ge=1)
    stats_max_rows: int = Field(default=200_000, ge=1)

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, value: str) -> str:
        """Accept the usual postgres:// and postgresql:// forms and drive them with psycopg 3."""
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


settings = Settings()
