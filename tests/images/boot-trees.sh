#!/usr/bin/env bash
# Builds (once, into a cache outside the clone) the bootable variant of the patch scenario
# (tests/images/patch-trees.sh), for the slow boot test (tests/tests/boot.rs):
#   k0    debootstrap --variant=minbase with linux-image-amd64 and systemd-sysv   (A.0)
#   k1    k0 + apt-get install less bc, and a new /etc/motd                      (A.1)
#   kb1   k0 + apt-get install nginx-light, and the system user nginx            (B.1)
# k0 is a GPT disk (BIOS boot, EFI vfat, ext4 root) that boots: extlinux in /boot/extlinux of
# the root filesystem, syslinux's gptmbr.bin in the protective MBR, the root partition
# marked legacy-BIOS-bootable, the kernel on the serial console. k1 and kb1 are copies of
# k0's disk changed in place (the root filesystem loop-mounted, apt-get in a chroot), as the
# OS and middleware teams would change their copies.
# Installs qemu-system-x86, extlinux and syslinux-common on the host when missing.
# Prints the folder: $CACHE/boot/{NAME}.raw.
# Usage: tests/images/boot-trees.sh [CACHE]   (default: $IMAGELAKE_TEST_CACHE or ~/.cache/imagelake-tests)
set -euo pipefail
cache=${1:-${IMAGELAKE_TEST_CACHE:-$HOME/.cache/imagelake-tests}}
mirror=${IMAGELAKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
out=$cache/boot
mkdir -p "$out/debs"
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v extlinux >/dev/null || [ ! -f /usr/lib/syslinux/mbr/gptmbr.bin ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 extlinux syslinux-common >/dev/null
fi
source "$(dirname "$0")/chroot.sh"

if [ ! -d "$out/k0.tree" ]; then
  tmp=$out/.k0.partial
  rm -rf "$tmp"
  echo "debootstrap bookworm minbase + linux-image-amd64 into $out/k0.tree (once)" >&2
  debootstrap --variant=minbase --cache-dir="$out/debs" --include=linux-image-amd64,systemd-sysv,initramfs-tools \
    bookworm "$tmp" "$mirror" >"$out/k0.log" 2>&1 || { tail -20 "$out/k0.log" >&2; exit 1; }
  echo boot-scenario > "$tmp/etc/hostname"
  printf 'A.0: the OS team base\n' > "$tmp/etc/motd"
  printf 'LABEL=root / ext4 defaults 0 1\n' > "$tmp/etc/fstab"
  # root logs in on the serial console without a password: the test checks the running system.
  chroot "$tmp" passwd -d root >/dev/null
  rm -rf "$tmp/var/cache/apt/archives/"*.deb
  mv "$tmp" "$out/k0.tree"
fi
# A.0's disk: the tree, and the boot loader installed once.
if [ ! -f "$out/k0.raw" ]; then
  tree=$out/k0.tree work=$out/.k0.disk
  rm -rf "$work" && mkdir -p "$work/mnt"
  used=$(du -sm "$tree" | cut -f1)
  root_mib=$((used + used / 2 + 128))
  mke2fs -q -F -t ext4 -L root -d "$tree" "$work/root.img" "${root_mib}M" >/dev/null
  # extlinux in the root filesystem, loading the tree's kernel and initrd.
  mount -o loop "$work/root.img" "$work/mnt"
  kernel=$(cd "$work/mnt/boot" && ls vmlinuz-* | head -1)
  initrd=$(cd "$work/mnt/boot" && ls initrd.img-* | head -1)
  mkdir -p "$work/mnt/boot/extlinux"
  printf 'DEFAULT debian\nTIMEOUT 0\nPROMPT 0\nLABEL debian\n  KERNEL /boot/%s\n  INITRD /boot/%s\n  APPEND root=LABEL=root ro console=ttyS0\n' \
    "$kernel" "$initrd" > "$work/mnt/boot/extlinux/extlinux.conf"
  extlinux --install "$work/mnt/boot/extlinux" >/dev/null 2>&1
  umount "$work/mnt"
  mkfs.vfat -n EFI -C "$work/esp.img" $((32 * 1024)) >/dev/null
  total=$((1 + 1 + 32 + root_mib + 1))
  truncate -s "${total}M" "$work/disk.raw"
  sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+32M -t2:ef00 -c2:esp -n3:0:0 -t3:8304 -c3:root -A3:set:2 "$work/disk.raw" >/dev/null
  dd if=/usr/lib/syslinux/mbr/gptmbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
  dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=2 conv=notrunc,sparse status=none
  dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=34 conv=notrunc,sparse status=none
  mv "$work/disk.raw" "$out/k0.raw"
  rm -rf "$work"
fi

# A.1 and B.1: A.0's disk, changed as a machine changes its own disk, in place: its root
# filesystem mounted, the install run in a chroot of it (the boot loader untouched).
derive() {
  local name=$1 script=$2
  [ -f "$out/$name.raw" ] && return 0
  local disk=$out/.$name.raw mnt=$out/.$name.mnt
  cp --sparse=always "$out/k0.raw" "$disk"
  mkdir -p "$mnt"
  mount -o loop,offset=$((34 * 1024 * 1024)) "$disk" "$mnt"
  local status=0
  in_chroot "$mnt" sh -c "$script" >"$out/$name.log" 2>&1 || status=$?
  rm -rf "$mnt/var/cache/apt/archives/"*.deb
  umount "$mnt"
  rmdir "$mnt"
  [ $status -eq 0 ] || { tail -20 "$out/$name.log" >&2; exit 1; }
  mv "$disk" "$out/$name.raw"
}
apt="apt-get update -qq && apt-get install -y --no-install-recommends"
derive k1 "$apt less bc && printf 'A.1: updated by the OS team\n' > /etc/motd"
derive kb1 "$apt nginx-light && adduser --system --group --no-create-home --home /nonexistent nginx"
echo "$out"
