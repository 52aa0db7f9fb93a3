#!/usr/bin/env bash
# Runs every Orrery test, installing what the tests need first.
#
# - the wasm32-wasip2 Rust target (plugin and sandbox examples);
# - a Python virtualenv (openapi/.venv) with openapi-python-client, for the
#   generated-client test, schemathesis, for the property-based run over
#   the spec and the check of real answers against it (tests/tests/contract.rs),
#   and PostHog's Python library (tests/tests/compat.rs);
# - the `orrery` binary, which the black-box tests in tests/ start;
# - (by the tests themselves) the locked npm packages of sdk/js, sdk/ts and
#   tests/browser (`npm ci`), and Debian's chromium for the browser tests;
# - the plugin SDK (sdk/), tested natively; its example and test plugins are
#   built for wasm32-wasip2 by the tests that load them.
#
# PostgreSQL tests run when ORRERY_TEST_DATABASE_URL is set, e.g.
#   ORRERY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1/test tests/run.sh
# and print that they were skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi

python=${PYTHON:-python3}
if [ ! -x openapi/.venv/bin/openapi-python-client ] || [ ! -x openapi/.venv/bin/schemathesis ] \
  || ! openapi/.venv/bin/python -c 'import posthog' 2>/dev/null; then
  [ -x openapi/.venv/bin/pip ] || "$python" -m venv openapi/.venv
  openapi/.venv/bin/pip install -q openapi-python-client==0.29.1 schemathesis==4.32.5 posthog==7.91.1
fi
export ORRERY_TEST_PYTHON_VENV="$PWD/openapi/.venv"

cargo build --workspace --bins
# The plugin SDK's own tests (natively); its components are built for
# wasm32-wasip2 by the tests that load them (orrery_tests::plugin_component).
cargo test --manifest-path sdk/Cargo.toml --quiet
cargo test --workspace --no-fail-fast
