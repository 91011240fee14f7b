#!/usr/bin/env bash
# The uptake table and the dashboard over HTTP, one request at a time, against the databases that
# bench/stats_scale.py seeded (bench_seed_100k, bench_seed_1m, bench_seed_10m by default): for
# each, `pharmref serve --workers 2`, then 3 s of warm-up and 20 s of GETs with bench/intake.py as
# an ICB analyst: the 12-month per-PCN table (interval none and month) and GET /dashboard.
#
#     bench/stats_http.sh                         # figures to bench/results/<date>-stats-scale/http/
#     DATABASES="bench_seed_10m" bench/stats_http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
databases="${DATABASES:-bench_seed_100k bench_seed_1m bench_seed_10m}"
port="${PORT:-8770}"
out="bench/results/$(date -u +%F)-stats-scale/http"
mkdir -p "$out"
today=$(date -u +%F)
from=$(date -u -d '1 year ago + 1 day' +%F)
for db in $databases; do
    export PHARMREF_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/$db"
    export PHARMREF_LOG_LEVEL=warning
    .venv/bin/pharmref serve --workers 2 --port "$port" >"${TMPDIR:-/tmp}/pharmref-stats-http-$db.log" 2>&1 &
    server=$!
    for _ in $(seq 60); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
        sleep 0.5
    done
    token=$(.venv/bin/pharmref token --role icb-analyst --org QXX)
    for what in none month dashboard; do
        path="/api/v1/stats/uptake?group_by=pcn&interval=$what&from=$from&to=$today"
        [ "$what" = dashboard ] && path=/dashboard
        echo "== $db $what $path"
        .venv/bin/python bench/intake.py --url "http://127.0.0.1:$port" --kind get --path "$path" \
            --concurrency 1 --duration 20 --warmup 3 --token "$token" \
            --json-out "$out/${db}_$what.json" | grep -E "requests|latency"
    done
    kill -INT "$server"
    wait "$server" || true
done
