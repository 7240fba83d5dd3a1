#!/usr/bin/env bash
# The whole test suite, as README and CI run it: installs what the tests need
# (Dovecot, openssl), then formatting, lints, unit and integration tests.
# Integration tests start their own private Dovecot on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
export CARGO_TERM_COLOR=never
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets 2>&1
