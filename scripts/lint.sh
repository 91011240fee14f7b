#!/usr/bin/env bash
# Formatting, lint and strict typing.
source "$(dirname "$0")/_venv.sh"
ruff format --check app tests alembic bench
ruff check app tests alembic bench
mypy app tests
