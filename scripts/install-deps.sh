#!/usr/bin/env bash
# Installs everything imagelake's build and tests need on a fresh Debian machine.
# Idempotent: packages already present are skipped, so the test command can call it every time.
set -euo pipefail

packages=(
  protobuf-compiler libprotobuf-dev  # lance's build scripts run protoc (and need its well-known .proto files)
  e2fsprogs           # mke2fs -d, debugfs, e2fsck: test images and oracles
  gdisk fdisk         # sgdisk, sfdisk: partition tables in tests
  dosfstools mtools   # mkfs.vfat, mcopy: EFI system partitions in tests
  qemu-utils          # qemu-img: qcow2 test images, convert oracle
  rpm                 # rpmbuild and rpm: real rpm databases in tests
  python3-rpm         # rpm.labelCompare: the oracle of rpm's version order
  db5.3-util          # db5.3_load: Berkeley DB rpm databases made by the Berkeley DB library
  liblua5.3-dev libpopt-dev libgcrypt20-dev libmagic-dev libsqlite3-dev libzstd-dev \
    libbz2-dev liblzma-dev zlib1g-dev pkg-config  # building rpm with NDB (scripts/rpm-ndb.sh)
  lvm2                # pvcreate, vgcreate, lvcreate: LVM metadata in tests
  xfsprogs            # mkfs.xfs, xfs_db: XFS roots in tests, and their oracle
  btrfs-progs         # mkfs.btrfs: a filesystem imagelake stores raw and lists by type, in tests
  debootstrap         # Debian trees for the end-to-end test
  attr                # setfattr: xattrs in test trees
  libacl1-dev acl     # setfacl: ACLs in test trees; pjdfstest (cargo install) links libacl
  zstd
  openssl             # certificates made by the TLS tests of imagelake serve
  borgbackup casync ostree  # the peers the benchmarks run beside imagelake
  python3-llfuse restic fuse  # borg mount and restic mount (its fusermount): the mount benchmark's peers
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: imagelake needs a Rust toolchain" >&2; exit 1; }
# cargo-fuzz, for the fuzz targets in fuzz/ (CI runs each briefly).
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# fsx and pjdfstest, the file system exercisers the writable mount's tests run.
command -v fsx >/dev/null || cargo install fsx --locked --quiet
command -v pjdfstest >/dev/null || cargo install pjdfstest --locked --quiet
# rpm with its NDB backend (Debian's has none): the oracle of SUSE's Packages.db.
bash "$(dirname "$0")/rpm-ndb.sh"
# The Python environment (tests/python/requirements.txt in a venv outside the clone): the
# Flight SQL clients of the tests and notebooks, and DuckDB, the SQL benchmark's peer.
bash "$(dirname "$0")/python-env.sh"
