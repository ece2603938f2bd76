#!/usr/bin/env bash
# Builds (once) the Debian bookworm trees the end-to-end tests use, in a cache outside the
# clone, so that a second CI run does not rebuild them:
#   $CACHE/bookworm-mariadb/          debootstrap --variant=minbase + mariadb-server
#   $CACHE/debs/less_*.deb            one more package, installed in place by the dedup test
# Usage: debian-tree.sh [CACHE]   (default: $IMAGELAKE_TEST_CACHE or ~/.cache/imagelake-tests)
set -euo pipefail
cache=${1:-${IMAGELAKE_TEST_CACHE:-$HOME/.cache/imagelake-tests}}
mirror=${IMAGELAKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$cache"
tree=$cache/bookworm-mariadb
if [ ! -d "$tree" ]; then
  tmp=$cache/.bookworm-mariadb.partial
  rm -rf "$tmp"
  echo "debootstrap bookworm (minbase + mariadb-server) into $tree: a few minutes, once" >&2
  debootstrap --variant=minbase --include=mariadb-server bookworm "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  echo imagelake-test > "$tmp/etc/hostname"
  rm -rf "$tmp/var/cache/apt/archives/"*.deb
  mv "$tmp" "$tree"
fi
if ! ls "$cache"/debs/less_*.deb >/dev/null 2>&1; then
  mkdir -p "$cache/debs"
  (cd "$cache/debs" && { apt-get download less 2>/dev/null || { apt-get update -qq && apt-get download less; }; })
fi
echo "$tree"
