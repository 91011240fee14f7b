"""Examples of the statistics reports for the OpenAPI document (synthetic figures, as an
icb-analyst of the demo ICB sees them: counts rounded to 5, small ones suppressed)."""

from typing import Any

RULE: dict[str, Any] = {
    "exact": False,
    "suppress_from": 1,
    "suppress_to": 7,
    "round_to": 5,
    "description": (
        'Counts from 1 to 7 are suppressed (null, named in "suppressed"; "[c]" in CSV) and '
        "other counts are rounded to the nearest 5; rates use unrounded counts and are "
        "suppressed with their numerator or denominator, percentiles with the count they "
        "describe; further cells are suppressed so that no suppressed cell can be recovered by "
        "differencing a total against its parts in this response. Rounded parts need not add "
        "up to the rounded total."
    ),
}
_MONTH = {"period_start": "2026-10-01", "period_end": "2026-10-31", "partial": False}
_COUNTS = {
    "source": None,
    "pathway": None,
    "breakdown": None,
    "accepted": 110,
    "declined": 5,
    "forwarded": 0,
    "returned": 0,
    "cancelled": 0,
    "no_contact": 10,
    "completed": 95,
}
_PCN = {"group_kind": "pcn", "group_code": "U00001", "group_name": "Riverside PCN", **_MONTH}
_SMALL_PCN = {"group_kind": "pcn", "group_code": "U00002", "group_name": "Rivergate PCN", **_MONTH}
_TOTAL = {
    "group_kind": None,
    "group_code": "ALL",
    "group_name": "All of NHS Example Integrated Care Board",
    **_MONTH,
}
_HIDDEN_COUNTS = dict.fromkeys(
    ("made", "accepted", "declined", "returned", "no_contact", "completed"), None
)

UPTAKE_REPORT_EXAMPLE: dict[str, Any] = {
    "query": {
        "group_by": "pcn",
        "service": None,
        "source": None,
        "pathway": None,
        "from_date": "2026-10-01",
        "to_date": "2026-10-31",
        "interval": "month",
        "breakdown": None,
    },
    "disclosure": RULE,
    "rows": [
        {
            **_PCN,
            **_COUNTS,
            "made": 125,
            "completion_rate": 0.7642,
            "median_hours_to_completion": 5.2,
            "p90_hours_to_completion": 30.4,
            "registered_patients": 85_840,
            "per_1000_patients": 1.433,
            "suppressed": [],
        },
        {
            **_SMALL_PCN,
            **_COUNTS,
            **_HIDDEN_COUNTS,
            "forwarded": 0,
            "cancelled": 0,
            "completion_rate": None,
            "median_hours_to_completion": None,
            "p90_hours_to_completion": None,
            "registered_patients": 25_308,
            "per_1000_patients": None,
            "suppressed": [
                "made",
                "accepted",
                "declined",
                "returned",
                "no_contact",
                "completed",
                "completion_rate",
                "median_hours_to_completion",
                "p90_hours_to_completion",
                "per_1000_patients",
            ],
        },
    ],
    "totals": [
        {
            **_TOTAL,
            **_COUNTS,
            "made": 2_385,
            "accepted": 2_120,
            "declined": 60,
            "no_contact": 85,
            "completed": 1_815,
            "completion_rate": 0.7612,
            "median_hours_to_completion": 6.1,
            "p90_hours_to_completion": 41.7,
            "registered_patients": 1_594_741,
            "per_1000_patients": 1.495,
            "suppressed": [],
        }
    ],
}

INACTIVE_PRACTICES_EXAMPLE: dict[str, Any] = {
    "query": {
        "service": "pharmacy-first",
        "source": "gp-practice",
        "from_date": "2026-10-01",
        "to_date": "2026-10-31",
    },
    "disclosure": RULE,
    "practices_in_scope": 130,
    "count": 1,
    "rows": [
        {
            "practice_code": "A81856",
            "practice_name": "Albert Hill Medical Practice",
            "pcn_code": "U00022",
            "pcn_name": "Millwood PCN",
            "place_code": "QXX01",
            "place_name": "North Place",
            "registered_patients": 4_141,
        }
    ],
}

CONCENTRATION_REPORT_EXAMPLE: dict[str, Any] = {
    "query": {
        "service": "pharmacy-first",
        "source": "gp-practice",
        "from_date": "2025-11-01",
        "to_date": "2026-10-31",
        "top_percent": 10.0,
        "share_percent": 69.0,
    },
    "disclosure": RULE,
    "rows": [
        {
            "service": "pharmacy-first",
            "place_code": "QXX01",
            "place_name": "North Place",
            "practices": 44,
            "practices_with_referrals": 31,
            "referrals": 3_410,
            "top_practices": 5,
            "top_referrals": 1_905,
            "top_share": 0.5587,
            "practices_for_share": 9,
            "practices_for_share_percent": 20.45,
            "suppressed": [],
        },
        {
            "service": "pharmacy-first",
            "place_code": None,
            "place_name": "All of NHS Example Integrated Care Board",
            "practices": 130,
            "practices_with_referrals": 97,
            "referrals": 10_215,
            "top_practices": 13,
            "top_referrals": 7_050,
            "top_share": 0.6902,
            "practices_for_share": 13,
            "practices_for_share_percent": 10.0,
            "suppressed": [],
        },
    ],
}

TREND_REPORT_EXAMPLE: dict[str, Any] = {
    "query": {
        "group_by": "pcn",
        "service": "pharmacy-first",
        "source": None,
        "pathway": None,
        "from_date": "2026-10-01",
        "to_date": "2026-10-31",
    },
    "disclosure": RULE,
    "rows": [
        {
            **_PCN,
            "made": 125,
            "previous_made": 100,
            "change": 25,
            "change_percent": 24.51,
            "registered_patients": 85_840,
            "per_1000_patients": 1.433,
            "previous_per_1000_patients": 1.188,
            "per_1000_change": 0.245,
            "suppressed": [],
        }
    ],
    "totals": [
        {
            **_TOTAL,
            "made": 2_385,
            "previous_made": 2_210,
            "change": 175,
            "change_percent": 7.97,
            "registered_patients": 1_594_741,
            "per_1000_patients": 1.495,
            "previous_per_1000_patients": 1.386,
            "per_1000_change": 0.109,
            "suppressed": [],
        }
    ],
}

SERVICE_COUNTS_QUERY: dict[str, Any] = {
    "group_by": "pcn",
    "source": None,
    "from_date": "2026-10-01",
    "to_date": "2026-10-31",
    "interval": "month",
}

SERVICE_COUNTS_REPORT_EXAMPLE: dict[str, Any] = {
    "query": SERVICE_COUNTS_QUERY,
    "disclosure": RULE,
    "rows": [
        {
            **_PCN,
            "made": 40,
            "bp_checked": 35,
            "bp_abpm": 10,
            "bp_hypertension_confirmed": None,
            "abpm_rate": 0.2941,
            "hypertension_rate": None,
            "hypertension_of_abpm_rate": None,
            "suppressed": [
                "bp_hypertension_confirmed",
                "hypertension_rate",
                "hypertension_of_abpm_rate",
            ],
        }
    ],
    "totals": [
        {
            **_TOTAL,
            "made": 610,
            "bp_checked": 555,
            "bp_abpm": 120,
            "bp_hypertension_confirmed": 70,
            "abpm_rate": 0.2162,
            "hypertension_rate": 0.1261,
            "hypertension_of_abpm_rate": 0.5833,
            "suppressed": [],
        }
    ],
}

DMS_REPORT_EXAMPLE: dict[str, Any] = {
    "query": SERVICE_COUNTS_QUERY,
    "disclosure": RULE,
    "rows": [
        {
            **_PCN,
            "made": 30,
            "dms_stage1": 25,
            "dms_stage1_within_72h": 20,
            "dms_stage2": 20,
            "dms_stage3": 15,
            "stage1_within_72h_rate": 0.7917,
            "stage3_rate": 0.5,
            "suppressed": [],
        }
    ],
    "totals": [
        {
            **_TOTAL,
            "made": 415,
            "dms_stage1": 380,
            "dms_stage1_within_72h": 300,
            "dms_stage2": 310,
            "dms_stage3": 255,
            "stage1_within_72h_rate": 0.7895,
            "stage3_rate": 0.6145,
            "suppressed": [],
        }
    ],
}

_RULE_LINE = f"# disclosure: {RULE['description']}"
CSV_EXAMPLES: dict[str, str] = {
    "uptake": "\n".join(
        [
            "# pharmref uptake statistics",
            "# period: 2026-10-01 to 2026-10-31 (England local dates, inclusive)",
            "# filters: group_by=pcn; service=all; source=all; pathway=all; interval=month; "
            "breakdown=none",
            _RULE_LINE,
            "row,group_kind,group_code,group_name,period_start,period_end,source,pathway,made,"
            "accepted,declined,forwarded,returned,cancelled,no_contact,completed,"
            "completion_rate,median_hours_to_completion,p90_hours_to_completion,"
            "registered_patients,per_1000_patients,partial,breakdown",
            "group,pcn,U00001,Riverside PCN,2026-10-01,2026-10-31,,,125,110,5,0,0,0,10,95,"
            "0.7642,5.2,30.4,85840,1.433,false,",
            "group,pcn,U00002,Rivergate PCN,2026-10-01,2026-10-31,,,[c],[c],[c],0,[c],0,[c],[c],"
            "[c],[c],[c],25308,[c],false,",
            "total,,ALL,All of NHS Example Integrated Care Board,2026-10-01,2026-10-31,,,2385,"
            "2120,60,0,0,0,85,1815,0.7612,6.1,41.7,1594741,1.495,false,",
            "",
        ]
    ),
    "practices-without-referrals": "\n".join(
        [
            "# pharmref practices without referrals",
            "# period: 2026-10-01 to 2026-10-31 (England local dates, inclusive)",
            "# filters: service=pharmacy-first; source=gp-practice",
            _RULE_LINE,
            "# practices_in_scope: 130",
            "# count: 1",
            "row,practice_code,practice_name,pcn_code,pcn_name,place_code,place_name,"
            "registered_patients",
            "practice,A81856,Albert Hill Medical Practice,U00022,Millwood PCN,QXX01,North Place,"
            "4141",
            "",
        ]
    ),
    "concentration": "\n".join(
        [
            "# pharmref referral concentration",
            "# period: 2025-11-01 to 2026-10-31 (England local dates, inclusive)",
            "# filters: service=pharmacy-first; source=gp-practice; top_percent=10.0; "
            "share_percent=69.0",
            _RULE_LINE,
            "row,service,place_code,place_name,practices,practices_with_referrals,referrals,"
            "top_practices,top_referrals,top_share,practices_for_share,"
            "practices_for_share_percent",
            "place,pharmacy-first,QXX01,North Place,44,31,3410,5,1905,0.5587,9,20.45",
            "place,pharmacy-first,,All of NHS Example Integrated Care Board,130,97,10215,13,"
            "7050,0.6902,13,10.0",
            "",
        ]
    ),
    "month-on-month": "\n".join(
        [
            "# pharmref month-on-month change",
            "# period: 2026-10-01 to 2026-10-31 (England local dates, inclusive)",
            "# filters: group_by=pcn; service=pharmacy-first; source=all; pathway=all",
            _RULE_LINE,
            "row,group_kind,group_code,group_name,period_start,period_end,partial,made,"
            "previous_made,change,change_percent,registered_patients,per_1000_patients,"
            "previous_per_1000_patients,per_1000_change",
            "group,pcn,U00001,Riverside PCN,2026-10-01,2026-10-31,false,125,100,25,24.51,85840,"
            "1.433,1.188,0.245",
            "total,,ALL,All of NHS Example Integrated Care Board,2026-10-01,2026-10-31,false,"
            "2385,2210,175,7.97,1594741,1.495,1.386,0.109",
            "",
        ]
    ),
    "blood-pressure": "\n".join(
        [
            "# pharmref blood pressure check outcomes",
            "# period: 2026-10-01 to 2026-10-31 (England local dates, inclusive)",
            "# filters: group_by=pcn; source=all; interval=month",
            _RULE_LINE,
            "row,group_kind,group_code,group_name,period_start,period_end,partial,made,"
            "bp_checked,bp_abpm,bp_hypertension_confirmed,abpm_rate,hypertension_rate,"
            "hypertension_of_abpm_rate",
            "group,pcn,U00001,Riverside PCN,2026-10-01,2026-10-31,false,40,35,10,[c],0.2941,[c],"
            "[c]",
            "total,,ALL,All of NHS Example Integrated Care Board,2026-10-01,2026-10-31,false,"
            "610,555,120,70,0.2162,0.1261,0.5833",
            "",
        ]
    ),
    "dms": "\n".join(
        [
            "# pharmref DMS stage completion",
            "# period: 2026-10-01 to 2026-10-31 (England local dates, inclusive)",
            "# filters: group_by=pcn; source=all; interval=month",
            _RULE_LINE,
            "row,group_kind,group_code,group_name,period_start,period_end,partial,made,"
            "dms_stage1,dms_stage1_within_72h,dms_stage2,dms_stage3,stage1_within_72h_rate,"
            "stage3_rate",
            "group,pcn,U00001,Riverside PCN,2026-10-01,2026-10-31,false,30,25,20,20,15,0.7917,0.5",
            "total,,ALL,All of NHS Example Integrated Care Board,2026-10-01,2026-10-31,false,"
            "415,380,300,310,255,0.7895,0.6145",
            "",
        ]
    ),
}
