"""Examples of the statistics reports for the OpenAPI document (synthetic figures)."""

from typing import Any

_RULE: dict[str, Any] = {
    "exact": False,
    "suppress_from": 1,
    "suppress_to": 7,
    "round_to": 5,
    "description": "Counts from 1 to 7 are suppressed ...",
}

UPTAKE_REPORT_EXAMPLE: dict[str, Any] = {}
INACTIVE_PRACTICES_EXAMPLE: dict[str, Any] = {}
CONCENTRATION_REPORT_EXAMPLE: dict[str, Any] = {}
TREND_REPORT_EXAMPLE: dict[str, Any] = {}
SERVICE_COUNTS_REPORT_EXAMPLE: dict[str, Any] = {}
DMS_REPORT_EXAMPLE: dict[str, Any] = {}
CSV_EXAMPLES: dict[str, str] = dict.fromkeys(
    (
        "uptake",
        "practices-without-referrals",
        "concentration",
        "month-on-month",
        "blood-pressure",
        "dms",
    ),
    "# example\n",
)
