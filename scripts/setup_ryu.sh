#!/usr/bin/env bash
# The ryu runtime, in its own virtualenv (.venv-ryu), the way shared/reference/frameworks.md
# says ryu 4.34 works on Python 3.11: setuptools<68 in pip's build environment (through
# PIP_CONSTRAINT), eventlet 0.33.3, and the eventlet.wsgi.ALREADY_HANDLED shim loaded at
# start-up (a .pth file).  This project goes in without os-ken (controller/ofp.py then falls
# back to ryu) and with its other dependencies.  Made from Debian's python3 so Mininet imports.
# Idempotent: quick when the stamp matches.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RYU_VENV:-.venv-ryu}
stamp="$VENV/.installed-$(cat pyproject.toml scripts/setup_ryu.sh scripts/ryu/* | sha1sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0
echo "setup: building the ryu virtualenv $VENV"
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
constraints="$VENV/constraints.txt"
printf 'setuptools<68\neventlet==0.33.3\n' > "$constraints"
pip() {   # (this machine's pip config names local index folders that may not exist: hide that noise)
    PIP_CONSTRAINT="$constraints" "$VENV/bin/pip" -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
}
# six in the venv itself: the .pth shim imports eventlet (which imports six) before the
# system site-packages, where Debian's six is, are on sys.path
pip install 'ryu==4.34' 'eventlet==0.33.3'
pip install --ignore-installed six
# this project's dependencies from pyproject.toml (and its test extra), all but os-ken
mapfile -t deps < <("$VENV/bin/python" - <<'PY'
import tomllib
p = tomllib.load(open('pyproject.toml', 'rb'))['project']
for d in p['dependencies'] + p['optional-dependencies']['test']:
    if not d.replace('_', '-').lower().startswith('os-ken'):
        print(d)
PY
)
pip install "${deps[@]}"
pip install --no-deps -e .
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp scripts/ryu/opendvs_ryu_shim.py "$site/"
echo 'import opendvs_ryu_shim' > "$site/opendvs-ryu.pth"
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
assert importlib.util.find_spec('os_ken') is None, 'os-ken must not be in the ryu virtualenv'
import ryu.base.app_manager, mininet, controller.ofp                  # noqa: E401,F401
assert controller.ofp.FRAMEWORK == 'ryu', controller.ofp.FRAMEWORK
PY
rm -f "$VENV"/.installed-*; touch "$stamp"
