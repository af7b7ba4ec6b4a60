#!/usr/bin/env bash
# Schemathesis over the served OpenAPI document: `meterd serve` against a fresh database and
# fresh queues, every check, a fixed seed and a bounded time (about 3 minutes), once with the
# admin key and once with a tenant key. Fails on any 5xx, schema violation or undocumented
# status; stops the server and drops the database whatever happens.
# Needs PostgreSQL and RabbitMQ running (.ci/run starts them).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
SEED=${SCHEMATHESIS_SEED:-20261201}
# Seconds per run, and how many examples per operation and phase at most.
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-80}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-60}

log() { printf '==> %s\n' "$*"; }

# Run as a module: pip may put the `schemathesis` script in a folder that is not on PATH.
schemathesis() { python3 -m schemathesis.cli "$@"; }

if ! schemathesis --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION"
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip
    fi
    python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" ||
        python3 -m pip install --quiet --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
fi

log "building meterd"
cargo build --quiet --bin meterd

tag="st_$(date +%s)_$$"
db="meterd_${tag}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:${port}"
admin_key="admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
work=$(mktemp -d)
server_pid=

cleanup() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    psql -q -h 127.0.0.1 -U postgres -d postgres \
        -c "DROP DATABASE IF EXISTS \"${db}\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

log "starting meterd on ${base} (database ${db})"
METERD__DATABASE__URL="postgres://postgres@127.0.0.1:5432/${db}" \
METERD__HTTP__ADDR="127.0.0.1:${port}" \
METERD__AUTH__ADMIN_KEY="$admin_key" \
METERD__AMQP__EXCHANGE="${tag}.usage" \
METERD__AMQP__QUEUE="${tag}.events" \
METERD__AMQP__DEAD_LETTER_EXCHANGE="${tag}.dlx" \
METERD__AMQP__DEAD_LETTER_QUEUE="${tag}.dead" \
METERD__AMQP__QUEUE_EXPIRES_MS=60000 \
METERD__BILLING__AUTO_FINALIZE=false \
METERD__LOG__FORMAT=json \
    target/debug/meterd serve >"$work/meterd.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 120); do
    if curl -fsS "${base}/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/meterd.log" >&2
        echo "meterd exited before it was ready" >&2
        exit 1
    fi
    sleep 0.5
done
curl -fsS "${base}/readyz" >/dev/null

tenant_key=$(curl -fsS -X POST "${base}/v1/api-keys" \
    -H "Authorization: Bearer ${admin_key}" -H 'Content-Type: application/json' \
    -d '{"role": "tenant", "tenant": "acme"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')

status=0
for who in admin tenant; do
    key=$admin_key
    if [ "$who" = tenant ]; then key=$tenant_key; fi
    log "schemathesis as ${who} (seed ${SEED}, at most ${MAX_TIME} s)"
    schemathesis --config-file .ci/schemathesis.toml run "${base}/openapi.json" \
        --checks all \
        --seed "$SEED" \
        --max-examples "$MAX_EXAMPLES" \
        --max-time "$MAX_TIME" \
        --request-timeout 10 \
        --workers 1 \
        --header "Authorization: Bearer ${key}" \
        --report junit --report-dir "target/schemathesis/${who}" ||
        status=$?
done

if grep -q '"level":"ERROR"' "$work/meterd.log"; then
    log "meterd logged errors during the run:"
    grep '"level":"ERROR"' "$work/meterd.log" | head -n 20
fi
exit "$status"
