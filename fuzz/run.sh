#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), two at a time, seeded from
# ../shared/fixtures/ext4-corrupt and from small disks and databases made by real tools.
# A crash stops its target and leaves the input in fuzz/artifacts/<target>/; turn it into a
# regression test before fixing it.
# Usage: fuzz/run.sh [SECONDS]     (needs cargo-fuzz: `cargo install cargo-fuzz --locked`)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
fixtures=../../shared/fixtures/ext4-corrupt
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/work/target-fuzz}

seed() {
  mkdir -p corpus/ext4 corpus/partition corpus/dpkg corpus/os
  if [ -d "$fixtures" ] && [ -z "$(ls corpus/ext4)" ]; then
    # The first 4 MiB of each (libFuzzer's -max_len below); head closing the pipe early is fine.
    for f in "$fixtures"/*.img.gz; do { gzip -dc "$f" || true; } | head -c 4194304 > "corpus/ext4/$(basename "$f" .img.gz)"; done
  fi
  if [ -z "$(ls corpus/partition)" ]; then
    local t; t=$(mktemp -d)
    truncate -s 4M "$t/gpt" && sgdisk -n1:2048:+1M -t1:ef02 -n2:0:0 -t2:8300 "$t/gpt" >/dev/null
    truncate -s 4M "$t/mbr" && printf 'label: dos\nstart=2048, size=2048, type=83\nstart=4096, size=4096, type=5\nstart=6144, size=1024, type=83\n' | sfdisk -q "$t/mbr"
    head -c 65536 "$t/gpt" > corpus/partition/gpt; head -c 4194304 "$t/mbr" > corpus/partition/mbr
    rm -rf "$t"
  fi
  [ -n "$(ls corpus/dpkg)" ] || head -c 65536 /var/lib/dpkg/status > corpus/dpkg/status
  [ -n "$(ls corpus/os)" ] || cp /etc/os-release corpus/os/os-release
}

seed
# Sanitizer flags are unstable: RUSTC_BOOTSTRAP lets the machine's stable toolchain take them.
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release >/dev/null
run() {
  cargo fuzz run --release "$1" "corpus/$1" -- -max_total_time="$seconds" -max_len=4194304 \
    -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 > "logs/$1.log" 2>&1 \
    && echo "$1: no crash in ${seconds}s ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$1.log" | grep -o '[0-9]*$') runs)" \
    || { echo "$1: FAILED, see fuzz/logs/$1.log"; return 1; }
}
mkdir -p logs
status=0
run ext4 & a=$!; run partition & b=$!
wait $a || status=1; wait $b || status=1
run dpkg & a=$!; run os & b=$!
wait $a || status=1; wait $b || status=1
exit $status
