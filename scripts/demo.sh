#!/usr/bin/env bash
# Set up and run pharmref on the embedded SQLite database with the demo ICB directory.
source "$(dirname "$0")/_venv.sh"
pharmref migrate
pharmref seed-demo
echo "pharmref on http://${HOST:-127.0.0.1}:${PORT:-8000}  (API docs: /docs)"
exec pharmref serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
