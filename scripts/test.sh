#!/usr/bin/env bash
# The test command: installs what the tests need, builds, and runs every test.
# Debug builds with a persistent target directory outside the clone keep CI within its time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target}
export CARGO_TERM_COLOR=never
bash tests/images/debian-tree.sh >/dev/null   # cached Debian trees for the end-to-end tests
bash scripts/modules.sh                        # the engine's module dependencies: no cycles
cargo build --workspace --bins
# Every fuzz target briefly (fuzz/run.sh 600 is the long run); a crash fails the run.
FUZZ_TARGET_DIR=${CARGO_TARGET_DIR}-fuzz bash fuzz/run.sh "${IMAGELAKE_FUZZ_SECONDS:-20}"
# Doc tests are left out (the docs hold no runnable examples); a total closes the run.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --no-fail-fast --lib --bins --tests 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }' "$log"
