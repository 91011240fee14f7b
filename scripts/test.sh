#!/usr/bin/env bash
# Set up and run the whole test suite (SQLite by default; PHARMREF_TEST_DATABASE_URL selects PostgreSQL).
source "$(dirname "$0")/_venv.sh"
set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
