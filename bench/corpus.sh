#!/usr/bin/env bash
# Builds (once, into a cache outside the clone) the benchmark corpus: five related Debian
# bookworm systems from `debootstrap --variant=minbase`, each as a root tree and as a GPT disk
# (BIOS boot, EFI vfat, ext4 root) in raw and qcow2 form:
#   base        minbase
#   nginx       + nginx-light
#   curl        + nginx-light, curl, ca-certificates
#   mariadb     + mariadb-server
#   postgresql  + postgresql
# Prints the corpus folder: $CACHE/corpus/{NAME}.tree/, {NAME}.raw and {NAME}.qcow2 (and
# {NAME}.ostree-tree/, the tree without special files, for OSTree).
# Usage: bench/corpus.sh [CACHE]   (default: $IMAGELAKE_TEST_CACHE or ~/.cache/imagelake-tests)
set -euo pipefail
cache=${1:-${IMAGELAKE_TEST_CACHE:-$HOME/.cache/imagelake-tests}}
mirror=${IMAGELAKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
corpus=$cache/corpus
mkdir -p "$corpus/debs"

declare -A include=(
  [base]=""
  [nginx]="nginx-light"
  [curl]="nginx-light,curl,ca-certificates"
  [mariadb]="mariadb-server"
  [postgresql]="postgresql"
)

for name in base nginx curl mariadb postgresql; do
  tree=$corpus/$name.tree
  if [ ! -d "$tree" ]; then
    tmp=$corpus/.$name.partial
    rm -rf "$tmp"
    echo "debootstrap bookworm minbase${include[$name]:+ + ${include[$name]}} into $tree (once)" >&2
    # Downloaded packages are kept in debs/, so each further tree fetches only what is new.
    debootstrap --variant=minbase --cache-dir="$corpus/debs" ${include[$name]:+--include=${include[$name]}} \
      bookworm "$tmp" "$mirror" >"$corpus/$name.log" 2>&1 || { tail -20 "$corpus/$name.log" >&2; exit 1; }
    echo "corpus-$name" > "$tmp/etc/hostname"
    rm -rf "$tmp/var/cache/apt/archives/"*.deb
    mv "$tmp" "$tree"
  fi
  disk=$corpus/$name.raw
  if [ ! -f "$disk" ]; then
    work=$corpus/.$name.disk
    rm -rf "$work" && mkdir -p "$work"
    # Root: the tree's size plus a quarter and 64 MiB, as an installer leaves room.
    used=$(du -sm "$tree" | cut -f1)
    root_mib=$((used + used / 4 + 64))
    mke2fs -q -F -t ext4 -L root -d "$tree" "$work/root.img" "${root_mib}M" >/dev/null
    mkfs.vfat -n EFI -C "$work/esp.img" $((32 * 1024)) >/dev/null
    mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
    printf 'not really a boot loader\n' > "$work/BOOTX64.EFI"
    mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
    total=$((1 + 1 + 32 + root_mib + 1))
    truncate -s "${total}M" "$work/disk.raw"
    sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+32M -t2:ef00 -c2:esp -n3:0:0 -t3:8304 -c3:root "$work/disk.raw" >/dev/null
    sgdisk -v "$work/disk.raw" | grep -q "No problems found" || { echo "$name: sgdisk made a bad table" >&2; exit 1; }
    dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=2 conv=notrunc,sparse status=none
    dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=34 conv=notrunc,sparse status=none
    mv "$work/disk.raw" "$disk"
    rm -rf "$work"
  fi
  # OSTree commits regular files, directories and symbolic links only (a deployed system's
  # /dev is a devtmpfs): its copy of the tree, made of hard links, leaves the special files out.
  if [ ! -d "$corpus/$name.ostree-tree" ]; then
    rm -rf "$corpus/.$name.ostree-tree"
    cp -al "$tree" "$corpus/.$name.ostree-tree"
    find "$corpus/.$name.ostree-tree" \( -type c -o -type b -o -type p -o -type s \) -delete
    mv "$corpus/.$name.ostree-tree" "$corpus/$name.ostree-tree"
  fi
  if [ ! -f "$corpus/$name.qcow2" ]; then
    qemu-img convert -O qcow2 "$disk" "$corpus/.$name.qcow2" && mv "$corpus/.$name.qcow2" "$corpus/$name.qcow2"
  fi
done
echo "$corpus"
