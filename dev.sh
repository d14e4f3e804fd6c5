#!/usr/bin/env bash
# Set-up and entry points for a fresh machine. Creates .venv at the repo root when it is
# missing (or when pyproject.toml changed since it was made), then:
#   bash dev.sh demo   the main job on the embedded default (scikit-learn's digits)
#   bash dev.sh test   the test suite (what CI runs)
#   bash dev.sh mutate [MODULE...]   mutation testing of every module with logic (or only these,
#                      e.g. spec shapes), then the score per module; resumes where it stopped
set -euo pipefail
cd "$(dirname "$0")"

venv() {
  local stamp=.venv/.cnnsearch-installed want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    echo "$want" > "$stamp"
  fi
}

# The report test opens the HTML report in a real headless browser: Debian's chromium.
# Installed when missing and this is root on Debian (as CI is); otherwise one line that
# says the command, and stop (the suite never skips that test in silence).
browser() {
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "dev.sh: installing Debian's chromium for the report test (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null && return 0
  fi
  echo "error: the report test needs Debian's chromium; run: sudo apt-get install -y chromium" >&2
  exit 2
}

case "${1:-}" in
  demo)
    venv
    shift
    exec .venv/bin/cnnsearch demo "$@"
    ;;
  test)
    venv
    shift
    browser
    exec .venv/bin/python -m pytest "$@"
    ;;
  mutate)
    venv
    shift
    [ -x .venv/bin/mutmut ] || .venv/bin/python -m pip install --quiet -e '.[dev,mutation]'
    patterns=()
    for module in "$@"; do patterns+=("cnnsearch.${module}.*"); done
    # one torch thread per mutant worker: mutmut runs one worker per core
    OMP_NUM_THREADS=1 .venv/bin/mutmut run "${patterns[@]}" || true
    exec .venv/bin/python benchmarks/mutation_scores.py --record "$@"
    ;;
  *)
    echo "usage: bash dev.sh demo|test|mutate [args...]" >&2
    exit 2
    ;;
esac
