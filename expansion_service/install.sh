#!/usr/bin/env bash
# Installs crossinfer (from this source tree) with pinned versions. The same script
# runs in both Dockerfiles and in tests/test_deploy.py, so the image steps are
# exercised here even though no Docker engine is available.
#
#   install.sh --venv DIR [--extras all]        create DIR as a virtualenv and install into it
#   install.sh --python PATH [--extras all]     install into an existing interpreter (SDK worker image)
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
EXTRAS="all"
VENV=""
PY=""
UV_VERSION="0.13.9"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --extras) EXTRAS="$2"; shift 2 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -n "$VENV" ]]; then
  python3 -m venv "$VENV"
  PY="$VENV/bin/python"
fi
if [[ -z "$PY" ]]; then
  echo "install.sh: give --venv DIR or --python PATH" >&2
  exit 2
fi
"$PY" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
# --system: install into the interpreter given, virtualenv or not.
"$PY" -m uv pip install -q --python "$PY" --system -c "$SRC/constraints.txt" "$SRC[$EXTRAS]"
"$PY" -m uv pip uninstall -q --python "$PY" --system uv
"$PY" -c "import crossinfer, apache_beam; print('crossinfer', crossinfer.__version__, 'apache-beam', apache_beam.__version__)"
