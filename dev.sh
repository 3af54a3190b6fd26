#!/usr/bin/env bash
# Set up surgeon in ./.venv (once; again when pyproject.toml or setup.py change) and run a job.
#   bash dev.sh demo    the main job on the embedded default (offline, tiny model, synthetic data)
#   bash dev.sh test    the test suite (python -m pytest)
#   bash dev.sh bench NAME [ARGS]   a benchmark from benchmarks/
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.surgeon-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

job=${1:-demo}
shift || true
case "$job" in
  demo) exec surgeon demo "$@" ;;
  test) exec python -m pytest "$@" ;;
  bench) name=$1; shift; exec python -m "benchmarks.$name" "$@" ;;
  *) echo "usage: bash dev.sh demo|test|bench NAME" >&2; exit 2 ;;
esac
