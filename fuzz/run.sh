#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), two at a time, seeded from
# ../shared/fixtures/ext4-corrupt and from small disks and databases made by real tools.
# A crash stops its target and leaves the input in fuzz/artifacts/<target>/; turn it into a
# regression test before fixing it.
# Usage: fuzz/run.sh [SECONDS]   (FUZZ_TARGETS="ext4 vfat" picks targets; needs cargo-fuzz)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
fixtures=../../shared/fixtures/ext4-corrupt
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/work/target-fuzz}

seed() {
  mkdir -p corpus/ext4 corpus/partition corpus/packages corpus/os corpus/vfat corpus/xfs corpus/btrfs
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
  if [ ! -e corpus/partition/lvm ] && command -v pvcreate >/dev/null; then
    # A real LVM2 physical volume (label, metadata ring, two logical volumes): its first MiB.
    # Without loop devices there is no such seed, and the target still runs.
    local t dev cfg='backup { backup = 0 archive = 0 }'; t=$(mktemp -d)
    truncate -s 16M "$t/pv"
    if dev=$(losetup -f --show "$t/pv" 2>/dev/null); then
      { pvcreate -q -y --config "$cfg" "$dev" && vgcreate -q --config "$cfg" "fuzzseed$$" "$dev" \
        && lvcreate -q --config "$cfg" --driverloaded n -an -Zn -L 4M -n a "fuzzseed$$" \
        && lvcreate -q --config "$cfg" --driverloaded n -an -Zn -L 4M -n b "fuzzseed$$"; } >/dev/null 2>&1 || true
      losetup -d "$dev" || true
      head -c 1048576 "$t/pv" > corpus/partition/lvm
    fi
    rm -rf "$t"
  fi
  [ -n "$(ls corpus/packages)" ] || head -c 65536 /var/lib/dpkg/status > corpus/packages/status
  if [ ! -e corpus/packages/bdb ] && command -v db5.3_load >/dev/null; then
    # A Berkeley DB hash database of small pages, some values on overflow pages.
    for i in $(seq 1 12); do printf 'key%s
%s
' "$i" "$(head -c $((i * 150)) /dev/zero | tr '\0' v)"; done \
      | db5.3_load -T -t hash -c db_pagesize=512 corpus/packages/bdb
  fi
  ndb="${IMAGELAKE_RPM_NDB:-/opt/imagelake/rpm-ndb}/bin/rpm"
  if [ ! -e corpus/packages/ndb ] && [ -x "$ndb" ]; then
    # rpm's NDB database of two real packages, one erased again: a free slot and a hole.
    local t; t=$(mktemp -d)
    for name in one two; do
      printf 'Name: %s\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n%%description\nd\n%%files\n' \
        "$name" > "$t/$name.spec"
      rpmbuild --quiet --define "_topdir $t/top" -bb "$t/$name.spec" >/dev/null 2>&1
    done
    "$ndb" --root "$t/root" --dbpath /var/lib/rpm --define '_db_backend ndb' -i --nodeps "$t"/top/RPMS/noarch/*.rpm
    "$ndb" --root "$t/root" --dbpath /var/lib/rpm -e --nodeps one
    cp "$t/root/var/lib/rpm/Packages.db" corpus/packages/ndb
    rm -rf "$t"
  fi
  [ -n "$(ls corpus/os)" ] || cp /etc/os-release corpus/os/os-release
  if [ -z "$(ls corpus/vfat)" ]; then
    # FAT12 and FAT16 fit -max_len whole; FAT32's minimum size does not (the tests cover it).
    for fat in 12 16; do
      mkfs.vfat -F $fat -s $((fat == 16 ? 1 : 4)) -C "corpus/vfat/fat$fat" 4096 >/dev/null
      mmd -i "corpus/vfat/fat$fat" ::/EFI ::/EFI/BOOT && mcopy -i "corpus/vfat/fat$fat" /etc/os-release ::/EFI/BOOT/BOOTX64.EFI
    done
  fi
  if [ -z "$(ls corpus/xfs)" ]; then
    # The smallest XFS mkfs.xfs makes (16 MiB; the test variables lift its 300 MB floor),
    # filled through a loop mount: its first 4 MiB hold the metadata. Version 4 too, empty.
    local t; t=$(mktemp -d)
    truncate -s 16M "$t/v5" "$t/v4"
    export TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1
    mkfs.xfs -q -f "$t/v5" && mkfs.xfs -q -f -m crc=0 "$t/v4" 2>/dev/null
    unset TEST_DIR TEST_DEV QA_CHECK_FS
    mkdir "$t/m"
    if mount -o loop "$t/v5" "$t/m" 2>/dev/null; then
      mkdir -p "$t/m/etc/many" && cp /etc/os-release /etc/passwd "$t/m/etc/"
      for i in $(seq 1 120); do : > "$t/m/etc/many/entry-$i"; done
      for i in $(seq 1 30); do setfattr -n "user.a$i" -v "value $i" "$t/m/etc/passwd"; done
      ln -s os-release "$t/m/etc/link" && ln "$t/m/etc/passwd" "$t/m/etc/hard"
      umount "$t/m"
    fi
    head -c 4194304 "$t/v5" > corpus/xfs/v5; head -c 4194304 "$t/v4" > corpus/xfs/v4
    rm -rf "$t"
  fi
  if [ -z "$(ls corpus/btrfs)" ]; then
    # A 64 MiB btrfs of mixed block groups (metadata and data together, single copies), whose
    # first 6 MiB hold all it has: a subvolume, a snapshot, attributes, links, and files
    # compressed with zstd, lzo and zlib, inline and in extents.
    local t; t=$(mktemp -d)
    truncate -s 64M "$t/v" && mkfs.btrfs -q -f -M "$t/v" >/dev/null 2>&1
    mkdir "$t/m"
    if mount -o loop "$t/v" "$t/m" 2>/dev/null; then
      mkdir -p "$t/m/etc/many" && cp /etc/os-release /etc/passwd "$t/m/etc/"
      for i in $(seq 1 120); do : > "$t/m/etc/many/entry-$i"; done
      for i in $(seq 1 30); do setfattr -n "user.a$i" -v "value $i" "$t/m/etc/passwd"; done
      ln -s os-release "$t/m/etc/link" && ln "$t/m/etc/passwd" "$t/m/etc/hard"
      btrfs subvolume create "$t/m/home" >/dev/null
      for c in zstd lzo zlib; do
        mount -o "remount,compress=$c" "$t/m"
        cp /etc/services "$t/m/home/services.$c" && cp /etc/os-release "$t/m/home/os-release.$c"
      done
      btrfs subvolume snapshot "$t/m/home" "$t/m/snapshot" >/dev/null
      umount "$t/m"
    fi
    head -c 6291456 "$t/v" > corpus/btrfs/mixed
    rm -rf "$t"
  fi
}

seed
# Sanitizer flags are unstable: RUSTC_BOOTSTRAP lets the machine's stable toolchain take them.
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release >/dev/null
run() {
  # btrfs's seed holds its metadata 5 MiB in (after its system chunk).
  local max_len=4194304; [ "$1" = btrfs ] && max_len=8388608
  cargo fuzz run --release "$1" "corpus/$1" -- -max_total_time="$seconds" -max_len="$max_len" \
    -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 > "logs/$1.log" 2>&1 \
    && echo "$1: no crash in ${seconds}s ($(grep -ao 'stat::number_of_executed_units: *[0-9]*' "logs/$1.log" | tail -1 | grep -o '[0-9]*$') runs)" \
    || { echo "$1: FAILED, see fuzz/logs/$1.log"; return 1; }
}
mkdir -p logs
status=0
# Two at a time: one per core.
read -ra targets <<< "${FUZZ_TARGETS:-ext4 partition packages os vfat xfs btrfs}"
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for t in "${targets[@]:i:2}"; do run "$t" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
done
exit $status
