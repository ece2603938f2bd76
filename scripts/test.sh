#!/usr/bin/env bash
# The test command: installs what the tests need, builds, and runs every test.
# Debug builds with a persistent target directory outside the clone keep CI within its time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target}
export CARGO_TERM_COLOR=never
bash tests/images/debian-tree.sh >/dev/null   # cached Debian trees for the end-to-end tests
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
