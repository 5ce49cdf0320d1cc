#!/usr/bin/env bash
# Validates deploy/ offline (see deploy/README.md):
#   - deploy/compose.yaml against the Compose specification's JSON schema, vendored as
#     deploy/compose-spec.schema.json, with check-jsonschema (PyPI; the virtual environment
#     scripts/lint-action.sh uses, LINT_VENV, default target/lint-venv),
#   - that the schema is doing its job: a copy with a misspelt key must be rejected,
#   - deploy/buildstate.service with `systemd-analyze verify`, when systemd is installed.
#
#   bash scripts/lint-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${LINT_VENV:-target/lint-venv}
if [ ! -x "$venv/bin/check-jsonschema" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'check-jsonschema==0.39.0'
fi
schema=deploy/compose-spec.schema.json

echo "check-jsonschema: deploy/compose.yaml ($schema)"
"$venv/bin/check-jsonschema" --schemafile "$schema" deploy/compose.yaml

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/^    retries: 3$/    retrys: 3/' deploy/compose.yaml >"$work/misspelt.yaml"
if cmp -s deploy/compose.yaml "$work/misspelt.yaml"; then
    echo "error: the misspelling check found no 'retries: 3' to misspell in deploy/compose.yaml" >&2
    exit 1
fi
if "$venv/bin/check-jsonschema" --schemafile "$schema" "$work/misspelt.yaml" >/dev/null; then
    echo "error: the schema accepted a misspelt key (retrys): it checks nothing" >&2
    exit 1
fi
echo "ok: the schema rejects a misspelt key"

if command -v systemd-analyze >/dev/null; then
    # The unit names /usr/local/bin/bldst and /etc/buildstate/buildstate.env, which this
    # machine need not have: verify a copy pointing at a binary that exists.
    bldst=${BLDST:-$(command -v bldst || echo /bin/true)}
    sed -e "s#^ExecStart=/usr/local/bin/bldst#ExecStart=$bldst#" \
        -e 's#^EnvironmentFile=/#EnvironmentFile=-/#' \
        deploy/buildstate.service >"$work/buildstate.service"
    echo "systemd-analyze verify: deploy/buildstate.service"
    # It exits 0 on unknown keys and bad values (it only warns): any warning fails here.
    warnings=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$work/buildstate.service" 2>&1) || true
    if [ -n "$warnings" ]; then
        echo "$warnings" >&2
        echo "error: systemd-analyze has objections to deploy/buildstate.service (above)" >&2
        exit 1
    fi
else
    echo "skipped: systemd-analyze is not installed (deploy/buildstate.service not verified)"
fi
echo "ok: deploy/"
