#!/usr/bin/env bash
# Builds (once) the Debian bookworm trees the end-to-end tests use, in a cache outside the
# clone, so that a second CI run does not rebuild them:
#   $CACHE/bookworm-mariadb/          debootstrap --variant=minbase + mariadb-server
#   $CACHE/bookworm-minbase/          debootstrap --variant=minbase
#   $CACHE/bookworm-postgresql/       debootstrap --variant=minbase + postgresql
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
# The other two systems of the mount's equivalence test.
for variant in minbase postgresql; do
  other=$cache/bookworm-$variant
  [ -d "$other" ] && continue
  tmp=$cache/.bookworm-$variant.partial
  rm -rf "$tmp"
  include=""
  [ "$variant" = postgresql ] && include=--include=postgresql
  echo "debootstrap bookworm ($variant) into $other: a few minutes, once" >&2
  debootstrap --variant=minbase $include bookworm "$tmp" "$mirror" >"$cache/debootstrap-$variant.log" 2>&1 \
    || { tail -20 "$cache/debootstrap-$variant.log" >&2; exit 1; }
  echo imagelake-$variant > "$tmp/etc/hostname"
  rm -rf "$tmp/var/cache/apt/archives/"*.deb
  mv "$tmp" "$other"
done
if ! ls "$cache"/debs/less_*.deb >/dev/null 2>&1; then
  mkdir -p "$cache/debs"
  # apt's progress goes to standard error: standard output is the tree's path alone.
  (cd "$cache/debs" && { apt-get download less 2>/dev/null || { apt-get update -qq && apt-get download less; }; }) >&2
fi
echo "$tree"
