#!/usr/bin/env bash
# Builds (once, into a cache outside the clone) the Debian bookworm systems of the patch
# scenario, each as a root tree and a GPT disk (BIOS boot, EFI vfat, ext4 root), the way
# the deployer scenario of Mirage has them:
#   a0    debootstrap --variant=minbase                     (the OS team's base, A.0)
#   a1    a0 + apt-get install less bc, and a new /etc/motd   (the OS team's update, A.1)
#   b1    a0 + apt-get install nginx-light, and the system user nginx (a middleware image, B.1)
#   b1c   b1 with its own /etc/motd                          (B.1 edited where A.1 is too)
# bookworm's nginx-light runs as www-data and adds no user; b1 adds `nginx` with
# `adduser --system`, as nginx packages of other releases do, so that B.1 has a user A.1 lacks.
# Installs run with apt-get in a chroot (as root), so the dpkg, apt and debconf databases and
# logs change as a real install changes them.
# Prints the folder: $CACHE/patch/{NAME}.tree/ and {NAME}.raw.
# Usage: tests/images/patch-trees.sh [CACHE]   (default: $IMAGELAKE_TEST_CACHE or ~/.cache/imagelake-tests)
set -euo pipefail
cache=${1:-${IMAGELAKE_TEST_CACHE:-$HOME/.cache/imagelake-tests}}
mirror=${IMAGELAKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
out=$cache/patch
mkdir -p "$out/debs"

source "$(dirname "$0")/chroot.sh"

# Makes tree $2 from tree $1 with the shell commands $3 (run in the chroot).
derive() {
  local from=$out/$1.tree to=$out/$2.tree script=$3
  [ -d "$to" ] && return 0
  local tmp=$out/.$2.partial
  rm -rf "$tmp"
  cp -a "$from" "$tmp"
  in_chroot "$tmp" sh -c "$script" >"$out/$2.log" 2>&1 || { tail -20 "$out/$2.log" >&2; exit 1; }
  rm -rf "$tmp/var/cache/apt/archives/"*.deb
  mv "$tmp" "$to"
}

if [ ! -d "$out/a0.tree" ]; then
  tmp=$out/.a0.partial
  rm -rf "$tmp"
  echo "debootstrap bookworm minbase into $out/a0.tree (once)" >&2
  debootstrap --variant=minbase --cache-dir="$out/debs" bookworm "$tmp" "$mirror" >"$out/a0.log" 2>&1 \
    || { tail -20 "$out/a0.log" >&2; exit 1; }
  echo patch-scenario > "$tmp/etc/hostname"
  printf 'A.0: the OS team base\n' > "$tmp/etc/motd"
  rm -rf "$tmp/var/cache/apt/archives/"*.deb
  mv "$tmp" "$out/a0.tree"
fi
apt="apt-get update -qq && apt-get install -y --no-install-recommends"
derive a0 a1 "$apt less bc && printf 'A.1: updated by the OS team\n' > /etc/motd"
derive a0 b1 "$apt nginx-light && adduser --system --group --no-create-home --home /nonexistent nginx"
derive b1 b1c "printf 'B.1: edited by the middleware team\n' > /etc/motd"

for name in a0 a1 b1 b1c; do
  disk=$out/$name.raw
  [ -f "$disk" ] && continue
  tree=$out/$name.tree work=$out/.$name.disk
  rm -rf "$work" && mkdir -p "$work"
  # Root: the tree's size plus a quarter and 64 MiB, as an installer leaves room.
  used=$(du -sm "$tree" | cut -f1)
  root_mib=$((used + used / 4 + 64))
  mke2fs -q -F -t ext4 -L root -d "$tree" "$work/root.img" "${root_mib}M" >/dev/null
  mkfs.vfat -n EFI -C "$work/esp.img" $((32 * 1024)) >/dev/null
  total=$((1 + 1 + 32 + root_mib + 1))
  truncate -s "${total}M" "$work/disk.raw"
  sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+32M -t2:ef00 -c2:esp -n3:0:0 -t3:8304 -c3:root "$work/disk.raw" >/dev/null
  dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=2 conv=notrunc,sparse status=none
  dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=34 conv=notrunc,sparse status=none
  mv "$work/disk.raw" "$disk"
  rm -rf "$work"
done
echo "$out"
