#!/usr/bin/env bash
# rpm with its NDB backend, the oracle of the tests that read SUSE's `Packages.db`. Debian
# builds rpm without NDB, so this builds Debian's own rpm source package (the same version as
# the installed rpm, fetched by apt from the machine's Debian mirror) with `--enable-ndb`,
# into $IMAGELAKE_RPM_NDB (default /opt/imagelake/rpm-ndb). The tests find it the same way
# (imagelake_tests::rpm_ndb). A stamp holds the version built: silent when it is current.
set -euo pipefail
prefix="${IMAGELAKE_RPM_NDB:-/opt/imagelake/rpm-ndb}"
version="$(dpkg-query -W -f='${Version}' rpm)"
stamp="$prefix/.imagelake-rpm-version"
if [ -x "$prefix/bin/rpm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi

echo "rpm with NDB: building Debian's rpm $version into $prefix"
started=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/log"
# The machine's mirror and suite, as a source list private to this build.
. /etc/os-release
mirror="$(sed -n 's/^URIs: *\(.*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
cat > "$work/rpm-src.sources" <<EOF
Types: deb-src
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: $VERSION_CODENAME
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
mkdir -p "$work/lists/partial"
apt_private=(-o Dir::Etc::sourcelist="$work/rpm-src.sources" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists")
# (`set -e` does not reach into a list followed by ||: each step is chained with &&.)
(
  cd "$work" &&
  apt-get update -qq "${apt_private[@]}" &&
  apt-get source --download-only -qq "${apt_private[@]}" "rpm=$version" &&
  tar xf rpm_*.orig.tar.*
) >"$log" 2>&1 || { cat "$log" >&2; echo "rpm with NDB: fetching the source failed" >&2; exit 1; }
src="$(find "$work" -maxdepth 1 -type d -name 'rpm-*' | head -1)"
# Only what reading and writing a database needs: no plugins, Python, archive or SELinux.
(
  cd "$src" &&
  ./configure --prefix="$prefix" --enable-ndb --enable-sqlite --disable-plugins --disable-python \
    --disable-nls --disable-openmp --without-archive --without-selinux --without-cap --without-acl \
    --without-audit --without-fsverity --without-imaevm --with-crypto=libgcrypt \
    LUA_CFLAGS="$(pkg-config --cflags lua5.3)" LUA_LIBS="$(pkg-config --libs lua5.3)" &&
  make -j"$(nproc)" &&
  rm -rf "$prefix" &&
  make install
) >"$log" 2>&1 || { tail -40 "$log" >&2; echo "rpm with NDB: the build failed" >&2; exit 1; }
echo "$version" > "$stamp"
echo "rpm with NDB: built in $((SECONDS - started)) s"
