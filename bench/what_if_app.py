"""The app with the what-ifs named in PHARMREF_BENCH_WHAT_IF (comma-separated) applied.

bench/run.py --what-if serves this module instead of app.main, so each uvicorn worker applies
the patches when it imports the app. Never serve it outside a benchmark.
"""

import os

from what_if import WHAT_IFS

from app.main import app

APPLIED = [name for name in os.environ.get("PHARMREF_BENCH_WHAT_IF", "").split(",") if name]
for name in APPLIED:
    WHAT_IFS[name]()

__all__ = ["app"]
