#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (root): apt packages, OVS daemons for the
# userspace datapath (no kernel module here), and the project's virtualenv.  Quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
APT_PKGS="openvswitch-switch mininet iproute2 iputils-ping iperf3 tcpdump arping netcat-openbsd
          ethtool socat python3-venv python3-pip procps traceroute
          chromium chromium-driver"              # the web view's browser test (tests/integration/test_webview.py)

missing=""
for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing apt packages:$missing"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
fi

# OVS: ovsdb-server through the packaged script, ovs-vswitchd for the userspace datapath only.
# Both are started only if not already answering (no init system runs them here).
if ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
    echo "setup: starting ovsdb-server"
    /usr/share/openvswitch/scripts/ovs-ctl start --no-ovs-vswitchd --system-id=random >/dev/null
fi
vsd_pid=/var/run/openvswitch/ovs-vswitchd.pid
if ! { [ -f $vsd_pid ] && kill -0 "$(cat $vsd_pid)" 2>/dev/null; }; then
    echo "setup: starting ovs-vswitchd (userspace datapath)"
    ovs-vswitchd --pidfile --detach --log-file --disable-system
fi
ovs-vsctl --timeout=5 show >/dev/null

# The venv is made from Debian's python3: Debian's Mininet package only imports there.
stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "setup: building virtualenv $VENV"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
    # (this machine's pip config names local index folders that may not exist: hide that noise)
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test,view]' 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -c 'import os_ken, mininet, ovs, prometheus_client, jsonschema, selenium, controller, mininet_topos
from controller.api.view import vis_dir; assert vis_dir(), "pyvis (vis-network) missing"'
    rm -f "$VENV"/.installed-*; touch "$stamp"
fi
