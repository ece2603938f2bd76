#!/usr/bin/env bash
# The Python environment of the tests, notebooks and benchmarks: a virtual environment outside
# the clone, at $IMAGELAKE_VENV (default ~/.cache/imagelake-venv), holding exactly
# tests/python/requirements.txt. Installs only when that file changed since the last install
# (a stamp holds its hash and the interpreter's version), so the test command can run this
# every time: silent when nothing changed, one line per install, pip's log only on failure.
# `--print` prints the venv's python. The tests and benchmarks find the venv the same way
# (imagelake_tests::venv_python).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$root/tests/python/requirements.txt"
venv="${IMAGELAKE_VENV:-$HOME/.cache/imagelake-venv}"
python="${IMAGELAKE_PYTHON:-python3}"   # the interpreter the venv is made from
stamp="$venv/.imagelake-requirements"
want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

if [ "${1:-}" = "--print" ]; then
  echo "$venv/bin/python"
  exit 0
fi

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

echo "python environment: installing tests/python/requirements.txt into $venv"
started=$SECONDS
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# A venv made from another interpreter, or half made, is made anew.
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1 \
   || [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "${want#* }" ]; then
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
fi
rm -f "$stamp"
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
     -r "$requirements" >"$log" 2>&1; then
  cat "$log" >&2
  echo "python environment: pip install failed (log above)" >&2
  exit 1
fi
# The notebooks' kernel, inside the venv (nbclient finds it through the venv's own prefix).
"$venv/bin/python" -m ipykernel install --sys-prefix --name imagelake --display-name "imagelake (venv)" \
  >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
echo "$want" >"$stamp"
echo "python environment: ready in $((SECONDS - started)) s ($("$venv/bin/python" --version))"
