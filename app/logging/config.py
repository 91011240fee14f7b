"""The logging configuration of pharmref's processes (a `logging.config.dictConfig` dict, which
uvicorn applies in every worker process)."""

import logging.config
from typing import Any, TextIO

# Libraries whose debug output would carry statement parameters or request detail: kept at
# WARNING whatever the level, so a DEBUG run never writes patient data (and alembic's plugin
# chatter at import, in every worker).
QUIET = (
    "sqlalchemy",
    "httpx",
    "httpcore",
    "multipart",
    "python_multipart",
    "asyncio",
    "alembic.runtime.plugins",
)


def log_config(level: str = "info", *, stream: str = "ext://sys.stdout") -> dict[str, Any]:
    """JSON lines on `stream` for every logger; uvicorn's access log off (the middleware writes
    `pharmref.access` lines with the route template instead of the raw path)."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logging.formatter.JsonFormatter"}},
        "handlers": {
            "json": {"class": "logging.StreamHandler", "formatter": "json", "stream": stream}
        },
        "root": {"level": level, "handlers": ["json"]},
        "loggers": {
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            **{name: {"level": "WARNING"} for name in QUIET},
        },
    }


def configure_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Install the configuration in this process (`stream` for tests; default stdout)."""
    config = log_config(level)
    if stream is not None:
        config["handlers"]["json"]["stream"] = stream
    logging.config.dictConfig(config)
