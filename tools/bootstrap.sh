#!/usr/bin/env bash
# Create (or reuse) the project's Python environment and link it at .venv.
#
# The environment is torch 2.14.1 + torchvision 0.29.1, a pure-Python detectron2 0.6 built from
# the PyPI sdist (hfai_runtime/devenv/detectron2_wheel), and hfai_runtime installed editable with its test
# tools. It lives in a cache folder keyed by a hash of everything that decides its contents,
# so a second run with unchanged inputs finishes in about a second; .venv is a link into it.
# It prints one line per step; pip's own output goes to bootstrap.log beside the environment
# and is shown only when a step fails.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PYTHON:-python3.11}
cache=${D2_HFAI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/d2-hfai-template}

key=$( { "$python" --version; echo "$repo"; cat tools/bootstrap.sh pyproject.toml \
          hfai_runtime/devenv/__init__.py hfai_runtime/devenv/detectron2_wheel/*.py; } | sha256sum | cut -c1-16)
venv="$cache/venv-$key"

if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ]; then
    ln -sfn "$venv" .venv
    exit 0
fi

mkdir -p "$cache"
log="$cache/bootstrap-$key.log"
: > "$log"
step() {  # step N/M "what": run the rest of the arguments, their output into the log
    local label=$1 what=$2
    shift 2
    printf 'bootstrap: [%s] %s\n' "$label" "$what"
    if ! "$@" >>"$log" 2>&1; then
        echo "bootstrap: step failed: $what; the last lines of $log:" >&2
        tail -n 25 "$log" >&2
        exit 1
    fi
}

echo "bootstrap: building the environment in $venv (first run: a few minutes, ~6 GB)"
# A venv's scripts embed its path, so it is built in place; .complete, written last, marks it usable.
rm -rf "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
step 1/4 "virtual environment ($("$python" --version))" "$python" -m venv "$venv"
step 2/4 "pip, setuptools<82, wheel" "${pip[@]}" install --upgrade "pip>=24" "setuptools>=68,<82" wheel
step 3/4 "hfai_runtime (editable) with the test tools" "${pip[@]}" install -e ".[test]"
# What a generated project's `make env` runs too (hfai_runtime/devenv): the pinned torch, the
# detectron2 0.6 wheel (built from the PyPI sdist once, then reused from $cache) with its pins, pytest.
step 4/4 "hfai-runtime env: torch, detectron2 0.6 (wheel in $cache), pytest" \
    env D2_HFAI_CACHE="$cache" "$venv/bin/hfai-runtime" env
"$venv/bin/python" -c "import detectron2, torch, hfai_runtime; print('bootstrap: ready: detectron2', detectron2.__version__, 'torch', torch.__version__)"
echo "$repo" > "$venv/.complete"
# Environments of this checkout from older inputs are dead weight (~6 GB each).
for old in "$cache"/venv-*; do
    if [ "$old" != "$venv" ] && [ "$(cat "$old/.complete" 2>/dev/null)" = "$repo" ]; then
        rm -rf "$old" "$cache/bootstrap-${old##*/venv-}.log"
    fi
done
ln -sfn "$venv" .venv
