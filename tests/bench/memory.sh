#!/usr/bin/env bash
# Peak RSS of `popspool --once` (release build, GNU time) in the cases
# README "Performance" ("Memory") reports: one 301 MiB message with a 220 MiB
# base64 attachment from a private Dovecot (mime = yes, then mime = no), a
# scripted server listing 1,000,000 messages, and 50 MiB encrypted and
# signed S/MIME messages (mime = yes and no). These are the full-size
# versions of tests/suite/memory.rs and smime.rs's big messages, which the
# suite runs smaller.
#
#   bash tests/bench/memory.sh
#
# Root on Debian 12 (Dovecot needs it); about 2 GB of free memory (the test
# builds the message in memory) and 1.5 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/deps.sh --core
command -v /usr/bin/time >/dev/null || apt-get install -y --no-install-recommends time
cargo build --release --locked
POPSPOOL_MEMORY_FULL=1 POPSPOOL_MEMORY_BIN="${CARGO_TARGET_DIR:-target}/release/popspool" \
	cargo test --locked --test suite -- --include-ignored --nocapture --test-threads 1 memory::a_ smime::big_ 2>&1 |
	grep -E 'peak RSS|^test |test result'
