# Sourced by the test image scripts: in_chroot TREE COMMAND... runs COMMAND in a chroot of
# TREE with what apt and maintainer scripts need: name resolution, /proc, and no service
# started (policy-rc.d).
in_chroot() {
  local tree=$1; shift
  cp /etc/resolv.conf "$tree/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$tree/usr/sbin/policy-rc.d" && chmod 755 "$tree/usr/sbin/policy-rc.d"
  mount -t proc proc "$tree/proc"
  local status=0
  chroot "$tree" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@" || status=$?
  umount "$tree/proc"
  rm -f "$tree/usr/sbin/policy-rc.d"
  return $status
}
