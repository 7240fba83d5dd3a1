#!/usr/bin/env bash
# The whole test suite, as README and CI run it, as root: installs what the
# tests need (tests/deps.sh: Dovecot, GNU Mailutils' pop3d, openssl, the
# packaging tools), then formatting, lints, and every unit and integration
# test, the ignored ones included (they need root, a real POP3 server or
# systemd-nspawn, which a plain `cargo test` by any user leaves out).
# Integration tests start their own private Dovecot or Mailutils pop3d on
# free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
export CARGO_TERM_COLOR=never
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets -- --include-ignored 2>&1
