#!/usr/bin/env bash
# The long torture run (the suite runs a bounded one): many more SIGKILLs and
# connection cuts over a bigger mailbox, for several seeds. As root.
#   ROUNDS=400 MESSAGES=1000 SEEDS="1 2 3" bash tests/torture.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh --core
for seed in ${SEEDS:-1 2 3 4 5}; do
  POPSPOOL_TORTURE_SEED=$seed POPSPOOL_TORTURE_ROUNDS=${ROUNDS:-300} \
  POPSPOOL_TORTURE_MESSAGES=${MESSAGES:-1000} \
    cargo test --release --locked --test suite -- --include-ignored --nocapture torture:: 2>&1 |
    grep -E "torture:|test result|panicked"
done
