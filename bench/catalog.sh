#!/usr/bin/env bash
# Catalog bytes a version costs: the five corpus images checked in and repacked, then eight
# one-file edits of the mariadb image (`imagelake replace db /etc/motd F`), each with what its
# own commit maintains (compaction once 8 fragments wait, index segments once 4 do, superseded
# files pruned), then a repack (the catalog compacted, every index in one segment). Prints
# the catalog's size (du of catalog/) after each step, what each edit added, and the sizes of
# its datasets before and after.
# Usage: bench/catalog.sh [IMAGELAKE_BINARY]   (default: target/release/imagelake)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/imagelake}
corpus=$(bash bench/corpus.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lib=$work/lib
size() { du -sb "$lib/catalog" | cut -f1; }

declare -A names=([base]=base [nginx]=web [curl]=curl [mariadb]=db [postgresql]=pg)
for image in base nginx curl mariadb postgresql; do
  "$bin" -L "$lib" checkin "$corpus/$image.raw" --name "${names[$image]}" >/dev/null
done
echo "five checkins: catalog $(size) bytes"
"$bin" -L "$lib" repack >/dev/null
start=$(size)
echo "repacked: catalog $start bytes"
du -sb "$lib"/catalog/*.lance | sed "s|$lib/catalog/||"
before=$start
for i in 1 2 3 4 5 6 7 8; do
  printf 'edit %d\n' "$i" > "$work/motd"
  "$bin" -L "$lib" replace db /etc/motd "$work/motd" >/dev/null
  after=$(size)
  echo "edit $i: catalog $after bytes, +$((after - before))"
  before=$after
done
"$bin" -L "$lib" repack >/dev/null
end=$(size)
echo "repacked: catalog $end bytes, $(((end - start) / 8)) bytes per edit"
du -sb "$lib"/catalog/*.lance | sed "s|$lib/catalog/||"
