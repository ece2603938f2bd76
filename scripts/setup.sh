#!/usr/bin/env bash
# Installs everything (system packages included), builds imagelake, and runs the main job on
# a small real image: a GPT disk (BIOS boot, EFI vfat, ext4 root holding this machine's dpkg
# database and os-release) is made with mke2fs/sgdisk, checked in, queried, and checked out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target}
cargo build --bin imagelake
bin=$CARGO_TARGET_DIR/debug/imagelake

demo=$(mktemp -d /tmp/imagelake-demo.XXXXXX)
mkdir -p "$demo/root/etc" "$demo/root/var/lib/dpkg"
cp /etc/os-release "$demo/root/etc/os-release"
echo demo-host > "$demo/root/etc/hostname"
cp /var/lib/dpkg/status "$demo/root/var/lib/dpkg/status"
cp -r /usr/share/doc/dpkg "$demo/root/doc"
mke2fs -q -F -t ext4 -d "$demo/root" "$demo/root.img" 32M
mkfs.vfat -C "$demo/esp.img" 8192 >/dev/null
truncate -s 44M "$demo/disk.img"
sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+8M -t2:ef00 -c2:esp -n3:0:+32M -t3:8300 -c3:root "$demo/disk.img" >/dev/null
dd if="$demo/esp.img" of="$demo/disk.img" bs=512 seek=4096 conv=notrunc,sparse status=none
dd if="$demo/root.img" of="$demo/disk.img" bs=512 seek=20480 conv=notrunc,sparse status=none
qemu-img convert -O qcow2 "$demo/disk.img" "$demo/demo.qcow2"

export IMAGELAKE_LIBRARY=$demo/library
set -x
"$bin" checkin "$demo/demo.qcow2" --name demo
"$bin" sql -c "SELECT i.name, i.version, count(*) AS packages FROM images i JOIN packages p USING (image_id) GROUP BY i.name, i.version"
"$bin" sql -c "SELECT partition, name, start, size, fs_type, fs_label FROM partitions ORDER BY partition"
"$bin" sql -c "SELECT path, size, mode, content_hash FROM files WHERE path LIKE '/etc/%'"
"$bin" checkout demo "$demo/out.raw"
{ set +x; } 2>/dev/null
qemu-img compare -q "$demo/demo.qcow2" "$demo/out.raw" && echo "checkout is byte-identical to the image ($demo/out.raw)"
