#!/usr/bin/env bash
# The Python package's tests: builds the wheel (scripts/build-wheel.sh),
# installs it with pytest and mypy into a virtualenv made with the system's python3
# under ~/.cache/pynbox (outside the checkout), and runs python/tests/.
# PYNBOX_HOME (where the wheel prepares its interpreter) is a directory of
# the cache as well, so that the first-use install is made once.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${XDG_CACHE_HOME:-$HOME/.cache}/pynbox
scripts/build-wheel.sh
wheel=$(ls target/wheels/pynbox-*.whl)

venv=$cache/test-venv
if [ ! -x "$venv/bin/pytest" ] || [ ! -x "$venv/bin/mypy" ]; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet pytest==9.2.0 mypy==2.4.1
fi
"$venv/bin/pip" install --quiet --force-reinstall --no-deps "$wheel"

export PYNBOX_HOME=${PYNBOX_TEST_HOME:-$cache/test-home}
export PYNBOX_WHEEL=$PWD/$wheel
# Outside the checkout, so that `import pynbox` is the installed wheel.
cd python/tests
# The stubs match the extension, and the package type-checks strictly
# (in a scratch directory, where mypy leaves its cache).
scratch=$(mktemp -d)
(cd "$scratch" && "$venv/bin/python" -m mypy.stubtest pynbox._pynbox && "$venv/bin/mypy" --strict -p pynbox)
rm -rf "$scratch"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" .
