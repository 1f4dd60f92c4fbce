"""Benchmark: `dvsctl trace` on the lab (examples/fabric.yaml, tenant acme with `default: deny`).
Prints JSON (and writes bench/results/trace.json); never asserts on time.

Per case, N runs of the real `dvsctl trace ... --json` (a process each, as an operator runs
it) and of the API call alone (GET /v1/trace/acme, in-process client): wall time and the
switches traced (one ofproto/trace each, plus one dpif/show per vswitchd).  Cases: a routed cross-rack connection a rule allows
(web1 on hv1 -> db1 on hv2: hv1, leaf1, hv2), the same pair denied by the default (db1 ->
web1 tcp/22), and a bridged pair across the spines (web1 -> web2 icmp: hv1, leaf1, a spine,
leaf2, hv3).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / 'bench' / 'results'
FABRIC = ROOT / 'examples' / 'fabric.yaml'
CASES = (('web1', 'db1', 'tcp/5432'), ('db1', 'web1', 'tcp/22'), ('web1', 'web2', 'icmp'))


def stats(vals: list[float], nd: int = 3) -> dict:
    return {'min': round(min(vals), nd), 'median': round(statistics.median(vals), nd), 'max': round(max(vals), nd)}


def main() -> int:
    from mininet_topos import Lab
    from tests.support import BIN, ControllerProcess, free_port, wait_until
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--runs', type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='opendvs-bench-trace-'))
    acme = work / 'acme.yaml'
    acme.write_text((ROOT / 'examples/tenants/acme.yaml').read_text().replace('default: allow', 'default: deny'))
    port = free_port()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=[str(acme)])
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port,
                            args=['--vswitchd-ctl', lab.plan.workdir + '/{hypervisor}/ovs-vswitchd.ctl']).start()
    out = {'runs': args.runs, 'cases': {}}
    try:
        assert ctl.dvsctl('apply', str(acme)).returncode == 0
        lab.up(timeout=60)
        wait_until(lambda: lab.ping('web1', 'web2'), 30, what='web1 reaches web2')
        token = (ctl.state_dir / 'api-token').read_text().strip()
        for src, dst, svc in CASES:
            cli, api, verdict = [], [], None
            for _ in range(args.runs):
                t0 = time.monotonic()
                r = subprocess.run([str(BIN / 'dvsctl'), 'trace', '--api', 'http://127.0.0.1:%d' % ctl.api_port,
                                    '--state-dir', str(ctl.state_dir), 'acme', src, dst, svc, '--json'],
                                   capture_output=True, text=True, check=True)
                cli.append(time.monotonic() - t0)
                view = json.loads(r.stdout)
                q = urllib.parse.urlencode({'src': src, 'dst': dst, 'service': svc})
                req = urllib.request.Request('http://127.0.0.1:%d/v1/trace/acme?%s' % (ctl.api_port, q),
                                             headers={'Authorization': 'Bearer ' + token})
                t0 = time.monotonic()
                with urllib.request.urlopen(req, timeout=60) as resp:
                    json.loads(resp.read())
                api.append(time.monotonic() - t0)
                verdict = view['verdict']['text']
            hops = len(view['hops'])
            out['cases']['%s -> %s %s' % (src, dst, svc)] = {
                'verdict': verdict, 'switches_traced': hops, 'path': [h['switch'] for h in view['hops']],
                'dvsctl_s': stats(cli), 'api_s': stats(api)}
    finally:
        lab.down()
        ctl.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / 'trace.json').write_text(json.dumps(out, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
