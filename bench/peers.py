#!/usr/bin/python3
"""bench/peers.py - opendvs side by side with OVS NORMAL, Ryu 4.34 and Faucet 1.10.12 (issue 11
part 7), on the same Mininet topologies in one run.  Ported from the reference harness
(shared/bench-peers/peers.py, its README is the manual); nothing outside the repo is used at run
time.  Run as root, under the lab lock, from the repo root:

    make bench-peers-setup                 # bench/.venv-ryu and bench/.venv-faucet (idempotent)
    flock /tmp/opendvs-lab.lock .venv/bin/python bench/peers.py suite          # what `make bench` runs
    .venv/bin/python bench/peers.py suite --tree-repeats 1 --linear-repeats 0 --controllers faucet,opendvs
    .venv/bin/python bench/peers.py run --controller opendvs --topo tree       # one run, JSON on stdout
    .venv/bin/python bench/peers.py report                                     # redraw bench/README.md

`suite` writes bench/results/peers.json (machine, every run, the medians) and regenerates the
peer table in bench/README.md (between the peers markers).  Any interpreter that imports
Debian's Mininet works (/usr/bin/python3, or the project's .venv, made with its system
site-packages); the burst sender inside h1 is /usr/bin/python3.

What one `run` does (every step bounded by a SIGALRM watchdog of <= 60 s):
  1. start the controller (if any) on a free 127.0.0.1 TCP port, wait until it LISTENs;
  2. build the Mininet network (OVSSwitch datapath='user', protocols=OpenFlow13, switches
     <prefix>1..N with a random prefix per run, so no other bridge is ever touched), `ethtool -K <intf> tx off` in
     every host (TCP through the userspace datapath needs it);
  3. t0 = net.start(); wait until every bridge holds >= 1 flow; then full pingall rounds
     until one has 0 % loss -> converge_s = t0 to the end of that round;
  4. flows on every switch; 5. RTT h1->hlast (median of 20 pings); 6. iperf3 5 s;
  7. the burst: h1 sends N frames with N random source MACs to hlast, while h2 pings
     h(last-1) every 50 ms; flows, to-controller packets and the controller's packet-in count
     sampled every 0.25 s until nothing changes for 3 s; vswitchd and controller CPU;
  8. controller peak RSS (VmHWM) and CPU; ovs-vswitchd CPU over the whole run.
Clean-up is in `finally`: everything started is killed by PID, net.stop() always runs.
"""

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers_ctl import (CONTROLLERS, RESULTS, RUNS, Ctx, SwitchInfo, check_ready,   # noqa: E402
                       cmd_setup, free_port, log)
import peers_table  # noqa: E402

# switch names <prefix>1..<prefix>N, a prefix per run (each `run` is its own process): 'pb' and
# three random letters, so no other user's bridge (and no other run's) is ever touched
SW_PREFIX = 'pb' + ''.join(random.choice('abcdefghjkmnpqrstuvwxyz') for _ in range(3))
STEP_LIMIT = 60              # hard per-step watchdog (seconds)
# one harness at a time (fixed pbs* names); the same file as the reference harness's
RUN_LOCK = os.path.join('/run/lock' if os.path.isdir('/run/lock') else '/tmp', 'opendvs-peers.lock')


# --------------------------------------------------------------------------- utilities

class StepTimeout(Exception):
    pass


class Terminated(BaseException):
    """Raised from the SIGTERM handler so that `finally` cleanup still runs."""


@contextlib.contextmanager
def step(name, seconds=STEP_LIMIT):
    """Watchdog: raise StepTimeout if the block runs longer than `seconds` (not nestable)."""
    seconds = min(seconds, STEP_LIMIT)

    def _fire(signum, frame):
        raise StepTimeout('step %r exceeded %ss' % (name, seconds))
    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    t = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        log('step %-22s %.2fs' % (name, time.monotonic() - t))


def sh(argv, timeout=10, check=False):
    """Run a command in the root namespace, return stdout (text)."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError('%s -> rc=%s %s' % (argv, r.returncode, r.stderr.strip()))
    return r.stdout



def tcp_listening(port):
    """True if some socket LISTENs on TCP `port` (reads /proc/net/tcp*, no connection made)."""
    hexport = ':%04X' % port
    for fn in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(hexport) and parts[3] == '0A':
                        return True
        except FileNotFoundError:
            pass
    return False


CLK_TCK = os.sysconf('SC_CLK_TCK')


def proc_stats(pid):
    """{'cpu_s', 'vmhwm_kb', 'vmrss_kb'} for a live PID, or None."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            st = f.read()
        fields = st[st.rindex(')') + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime
        out = {'cpu_s': round(cpu, 2)}
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    out['vmhwm_kb'] = int(line.split()[1])
                elif line.startswith('VmRSS:'):
                    out['vmrss_kb'] = int(line.split()[1])
        return out
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


def children_of(pid):
    kids = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
            if int(st[st.rindex(')') + 2:].split()[1]) == pid:
                kids.append(int(d))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return kids


def kill_pid(pid, popen=None, grace=5.0):
    """SIGTERM, wait, SIGKILL - this PID and its direct children, all by PID."""
    victims = children_of(pid) + [pid]
    for p in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            break
        if popen is None and not os.path.exists('/proc/%d' % pid):
            break
        time.sleep(0.05)
    for p in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(Exception):
            popen.wait(timeout=5)


def vswitchd_pid():
    try:
        with open('/var/run/openvswitch/ovs-vswitchd.pid') as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def ovs_coverage(name):
    try:
        return int(sh(['ovs-appctl', 'coverage/read-counter', name], timeout=5).strip())
    except (ValueError, subprocess.TimeoutExpired):
        return None


OVS_LOG = '/var/log/openvswitch/ovs-vswitchd.log'


def ovs_log_size():
    try:
        return os.path.getsize(OVS_LOG)
    except OSError:
        return None


def ovs_conn_events(offset, port):
    """Count rconn events for our controller target in the (read-only) vswitchd log."""
    if offset is None or not port:
        return None
    tgt = 'tcp:127.0.0.1:%d: ' % port
    ev = {'connected': 0, 'closed_by_peer': 0, 'other_disconnect': 0}
    try:
        with open(OVS_LOG, 'rb') as f:
            f.seek(offset if os.path.getsize(OVS_LOG) >= offset else 0)
            for raw in f:
                line = raw.decode('utf-8', 'replace')
                if tgt not in line or '|rconn|' not in line:
                    continue
                if line.rstrip().endswith(': connected'):
                    ev['connected'] += 1
                elif 'connection closed by peer' in line:
                    ev['closed_by_peer'] += 1
                elif 'disconnect' in line or 'no response to inactivity probe' in line:
                    ev['other_disconnect'] += 1
    except OSError:
        return None
    return ev


# --------------------------------------------------------------------------- topologies


def make_topos():
    from mininet.topo import Topo

    class BenchTree(Topo):
        """Same wiring/numbering as Mininet's TreeTopo, switch names pbs1.."""
        def build(self, depth=2, fanout=4):
            self.hostNum, self.switchNum = 1, 1
            self._add(depth, fanout)

        def _add(self, depth, fanout):
            if depth > 0:
                n = self.switchNum
                self.switchNum += 1
                node = self.addSwitch('%s%d' % (SW_PREFIX, n), dpid='%016x' % n)
                for _ in range(fanout):
                    self.addLink(node, self._add(depth - 1, fanout))
            else:
                node = self.addHost('h%d' % self.hostNum)
                self.hostNum += 1
            return node

    class BenchLinear(Topo):
        """Same wiring as Mininet's LinearTopo(k, n), hosts named h1..h(k*n)."""
        def build(self, k=4, n=4):
            last, h = None, 1
            for i in range(1, k + 1):
                sw = self.addSwitch('%s%d' % (SW_PREFIX, i), dpid='%016x' % i)
                for _ in range(n):
                    self.addLink(self.addHost('h%d' % h), sw)
                    h += 1
                if last:
                    self.addLink(sw, last)
                last = sw

    return {
        'tree': (lambda: BenchTree(depth=2, fanout=4), 'tree depth=2 fanout=4 (5 switches, 16 hosts)'),
        'linear': (lambda: BenchLinear(k=4, n=4), 'linear 4 switches x 4 hosts (16 hosts)'),
    }


# --------------------------------------------------------------------------- controllers




def hcmd(host, cmd, limit):
    """Run `cmd` in a Mininet host, bounded by coreutils timeout (and the step watchdog)."""
    return host.cmd('timeout -k 1 %d %s' % (limit, cmd))


def pingall_round(hosts, wait_s=1):
    """One full pingall: every ordered pair, one `ping -c1 -W wait_s` each.

    Stops at the first failure. Returns (ok, pairs_ok, failed_pair_or_None).
    """
    pairs_ok = 0
    for src in hosts:
        dsts = [d for d in hosts if d is not src]
        script = ('for ip in %s; do ping -c1 -W%d -q $ip >/dev/null 2>&1 || '
                  '{ echo FAIL $ip; exit 0; }; echo OK; done; echo ALLDONE') % (
                      ' '.join(d.IP() for d in dsts), wait_s)
        out = hcmd(src, "sh -c '%s'" % script, 5 + len(dsts) * (wait_s + 1))
        pairs_ok += len(re.findall(r'^OK\r?$', out, re.M))
        m = re.search(r'FAIL (\S+)', out)
        if m or 'ALLDONE' not in out:
            return False, pairs_ok, '%s->%s' % (src.name, m.group(1) if m else '?')
    return True, pairs_ok, None


PING_RE = re.compile(r'time=([\d.]+) ms')
PING_SUM_RE = re.compile(r'(\d+) packets transmitted, (\d+) received')


def parse_ping(out):
    times = [float(x) for x in PING_RE.findall(out)]
    m = PING_SUM_RE.search(out)
    tx, rx = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    loss = round(100.0 * (tx - rx) / tx, 2) if tx else None
    return {'tx': tx, 'rx': rx, 'loss_pct': loss,
            'rtt_median_ms': round(statistics.median(times), 3) if times else None,
            'rtt_avg_ms': round(sum(times) / len(times), 3) if times else None,
            'rtt_max_ms': max(times) if times else None}


BURST_PY = r'''
import errno, json, random, socket, sys, time
iface, dst, n, pps, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
macs, seen = [], set()
while len(macs) < n:
    b = bytearray(rnd.randrange(256) for _ in range(6))
    b[0] = (b[0] & 0xfc) | 0x02          # locally administered, unicast
    if bytes(b) not in seen:
        seen.add(bytes(b)); macs.append(bytes(b))
dstb = bytes.fromhex(dst.replace(':', ''))
payload = b'peerbench'.ljust(46, b'\0')   # ethertype 0x88b5 (IEEE local experimental)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
retries = 0
t0 = time.monotonic()
for i, m in enumerate(macs):
    if pps > 0:
        d = t0 + i / pps - time.monotonic()
        if d > 0:
            time.sleep(d)
    frame = dstb + m + b'\x88\xb5' + payload
    while True:
        try:
            s.send(frame)
            break
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                retries += 1
                time.sleep(0.0005)
                continue
            raise
print('BURST_JSON ' + json.dumps({'sent': n, 'send_s': round(time.monotonic() - t0, 4),
                                  'enobufs_retries': retries}))
'''


# --------------------------------------------------------------------------- OVS helpers

def flows_per_switch(switch_names):
    """Flow count per switch from `ovs-ofctl -O OpenFlow13 dump-flows` (lines with actions=)."""
    out = {}
    for sw in switch_names:
        txt = sh(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', sw], timeout=20)
        out[sw] = sum(1 for line in txt.splitlines() if 'actions=' in line)
    return out


def ovs_sock_drops():
    """sk_drops of ovs-vswitchd's AF_PACKET sockets bound to our switch ports (`ss -0 -m -p`).

    The userspace datapath reads each veth through such a socket; when ovs-vswitchd cannot
    keep up, frames are dropped there (the port's rx counter still counts them)."""
    out = {}
    txt = sh(['ss', '-0', '-m', '-p', '-n'], timeout=10)
    for m in re.finditer(r':(%s\d+-eth\d+)\s.*?skmem:\(.*?,d(\d+)\)' % SW_PREFIX, txt):
        out[m.group(1)] = int(m.group(2))
    return out


AGG_RE = re.compile(r'packet_count=(\d+) byte_count=\d+ flow_count=(\d+)')


def aggregate(sw, *match):
    txt = sh(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-aggregate', sw] + list(match), timeout=10)
    m = AGG_RE.search(txt)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def fdb_entries(sw):
    txt = sh(['ovs-appctl', 'fdb/show', sw], timeout=10)
    return max(0, len(txt.strip().splitlines()) - 1)


def port_rx(sw, port):
    """Live rx counters of one OpenFlow port (the ovsdb statistics column lags by ~5 s)."""
    txt = sh(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-ports', sw, str(port)], timeout=10)
    m = re.search(r'rx pkts=(\d+), bytes=\d+, drop=(\d+|\?)', txt)
    if not m:
        return {}
    return {'rx_packets': int(m.group(1)), 'rx_dropped': int(m.group(2)) if m.group(2).isdigit() else 0}


# --------------------------------------------------------------------------- one run

def preflight(log_lines):
    """Remove leftovers with this run's own prefix only (normally none)."""
    for br in sh(['ovs-vsctl', 'list-br'], timeout=10).split():
        if re.fullmatch(SW_PREFIX + r'\d+', br):
            log_lines.append('preflight: deleting leftover bridge %s' % br)
            sh(['ovs-vsctl', '--if-exists', 'del-br', br], timeout=10)
    for line in sh(['ip', '-o', 'link', 'show'], timeout=10).splitlines():
        m = re.match(r'\d+: (%s\d+(?:-eth\d+)?)[@:]' % SW_PREFIX, line)
        if m:
            log_lines.append('preflight: deleting leftover link %s' % m.group(1))
            sh(['ip', 'link', 'del', m.group(1)], timeout=10)


def run_one(a):
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController
    setLogLevel('warning')

    spec = CONTROLLERS[a.controller]
    topo_factory, topo_desc = make_topos()[a.topo]
    topo = topo_factory()
    tag = a.tag or '%s-%s' % (a.controller, a.topo)
    workdir = os.path.join(RUNS, '%s-%s' % (time.strftime('%Y%m%dT%H%M%S'), tag))
    os.makedirs(workdir, exist_ok=True)
    switches = [SwitchInfo(s, int(topo.nodeInfo(s)['dpid'], 16), sorted(topo.ports.get(s, {})))
                for s in topo.switches()]
    sw_set = set(topo.switches())
    links = [(x, y, info['port1'], info['port2']) for x, y, info in topo.links(withInfo=True)
             if x in sw_set and y in sw_set]
    ctx = Ctx(workdir=workdir, switches=switches, log_path=os.path.join(workdir, 'controller.log'),
              links=links)
    sw_names = [s.name for s in switches]

    R = {'controller': spec.name, 'label': spec.label, 'topo': a.topo, 'topo_desc': topo_desc,
         'tag': tag, 'workdir': workdir, 'started_utc': datetime.datetime.utcnow().isoformat() + 'Z',
         'errors': [], 'notes': []}
    proc = None
    net = None
    probes = []          # Popen objects started inside hosts (killed by PID in finally)
    vsd = vswitchd_pid()
    vsd0 = proc_stats(vsd) if vsd else None
    log_off = ovs_log_size()

    def err(where, e):
        R['errors'].append('%s: %s: %s' % (where, type(e).__name__, e))
        log('ERROR %s: %r' % (where, e))

    try:
        with step('preflight', 30):
            preflight(R['notes'])

        # ---- controller ---------------------------------------------------------------
        if spec.launch:
            port = free_port()
            argv, env = spec.launch(port, ctx)
            R['controller_port'] = port
            R['controller_argv'] = argv
            R['controller_env'] = {k: v for k, v in env.items() if k not in ('HOME', 'LANG')}
            with step('controller-listen', 30):
                t = time.monotonic()
                logf = open(ctx.log_path, 'wb')
                proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=logf,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
                logf.close()
                R['controller_pid'] = proc.pid
                while not tcp_listening(port):
                    if proc.poll() is not None:
                        raise RuntimeError('controller exited rc=%s, see %s' % (proc.returncode, ctx.log_path))
                    time.sleep(0.02)
                R['ctrl_listen_s'] = round(time.monotonic() - t, 3)
            with open('/proc/%d/cmdline' % proc.pid, 'rb') as f:
                R['controller_exec_cmdline'] = [x.decode() for x in f.read().split(b'\0') if x]
            R['ctrl_idle'] = proc_stats(proc.pid)
            ctrl_cls = partial(RemoteController, ip='127.0.0.1', port=port)
        else:
            ctrl_cls = None

        # ---- network ------------------------------------------------------------------
        with step('mininet-build', 60):
            net = Mininet(topo=topo, build=False, autoSetMacs=True, waitConnected=False,
                          switch=partial(OVSSwitch, datapath='user', protocols='OpenFlow13',
                                         failMode=spec.fail_mode),
                          controller=ctrl_cls)
            net.build()
            for h in net.hosts:
                hcmd(h, 'ethtool -K %s tx off' % h.defaultIntf(), 10)
        hosts = net.hosts
        h1, hl = hosts[0], hosts[-1]
        ph1, ph2 = hosts[1], hosts[-2]
        R['hosts'] = {'src': h1.name, 'dst': hl.name, 'probe': '%s->%s' % (ph1.name, ph2.name)}

        with step('net.start', 60):
            t0 = time.monotonic()
            net.start()
            R['net_start_s'] = round(time.monotonic() - t0, 3)

        # ---- 1. convergence -----------------------------------------------------------
        rounds = []
        R['pingall_rounds'] = rounds
        try:
            with step('connect+pingall', 60):
                # Gate: every bridge holds >= 1 flow (controller has programmed it). The
                # ovsdb Controller:is_connected column lags the real connection by ~5 s here,
                # so it is not used.
                pending = list(sw_names)
                while pending:
                    pending = [s for s in pending if not aggregate(s)[1]]
                    if pending:
                        if time.monotonic() - t0 > 30:
                            raise RuntimeError('switches without any flow after 30 s: %s' % pending)
                        time.sleep(0.05)
                R['programmed_s'] = round(time.monotonic() - t0, 3)
                while True:
                    tr = time.monotonic()
                    ok, n_ok, failed = pingall_round(hosts)
                    rounds.append({'ok': ok, 'pairs_ok': n_ok, 'failed': failed,
                                   'round_s': round(time.monotonic() - tr, 3)})
                    if ok:
                        R['converge_s'] = round(time.monotonic() - t0, 3)
                        break
                    if time.monotonic() - t0 > 50:
                        raise RuntimeError('no 0%%-loss pingall within 50 s (%d rounds)' % len(rounds))
                R['pingall_last_round_s'] = rounds[-1]['round_s']
        except (StepTimeout, RuntimeError) as e:
            err('convergence', e)
        if proc:
            R['ctrl_after_converge'] = proc_stats(proc.pid)

        # ---- 4. flows after pingall ---------------------------------------------------
        try:
            with step('dump-flows', 30):
                fps = flows_per_switch(sw_names)
                R['flows_after_pingall'] = sum(fps.values())
                R['flows_per_switch'] = fps
                if spec.fail_mode == 'standalone':
                    R['fdb_after_pingall'] = sum(fdb_entries(s) for s in sw_names)
        except Exception as e:
            err('dump-flows', e)

        # ---- 2. RTT -------------------------------------------------------------------
        try:
            with step('rtt', 30):
                out = hcmd(h1, 'ping -c 20 -i 0.05 -W 1 %s' % hl.IP(), 20)
                p = parse_ping(out)
                R['rtt_median_ms'] = p['rtt_median_ms']
                R['rtt'] = p
        except Exception as e:
            err('rtt', e)

        # ---- 3. iperf3 ----------------------------------------------------------------
        try:
            with step('iperf3', 40):
                srv = hl.popen(['iperf3', '-s', '-1', '-p', '5201'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                probes.append(srv)
                t = time.monotonic()
                while ':5201' not in hcmd(hl, 'ss -Hltn', 5):
                    if time.monotonic() - t > 10:
                        raise RuntimeError('iperf3 server not listening')
                    time.sleep(0.1)
                out = hcmd(h1, 'iperf3 -c %s -p 5201 -t 5 -J' % hl.IP(), 25)
                j = json.loads(out[out.index('{'):out.rindex('}') + 1])
                if 'error' in j:
                    raise RuntimeError(j['error'])
                R['iperf3_mbps'] = round(j['end']['sum_received']['bits_per_second'] / 1e6, 1)
                R['iperf3_retransmits'] = j['end']['sum_sent'].get('retransmits')
        except Exception as e:
            err('iperf3', e)
        finally:
            for p in probes:
                if p.poll() is None:
                    kill_pid(p.pid, p)

        # ---- 5. packet-in burst -------------------------------------------------------
        try:
            burst(a, spec, ctx, net, proc, R, probes, sw_names)
        except Exception as e:
            err('burst', e)

        # ---- 6. controller footprint --------------------------------------------------
        if proc:
            st = proc_stats(proc.pid)
            R['ctrl_final'] = st
            if st:
                R['ctrl_vmhwm_mib'] = round(st['vmhwm_kb'] / 1024, 1)
                R['ctrl_cpu_s'] = st['cpu_s']
            if proc.poll() is not None:
                R['errors'].append('controller died rc=%s' % proc.returncode)
        if spec.launch:
            ev = ovs_conn_events(log_off, R.get('controller_port'))
            if ev:
                R['ovs_conn_events'] = ev
                R['ctrl_reconnects'] = max(0, ev['connected'] - len(sw_names))
    except Terminated:
        R['errors'].append('terminated (SIGTERM)')   # cleanup below, then report what we have
    except Exception as e:
        err('run', e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for p in probes:
            if p.poll() is None:
                kill_pid(p.pid, p)
        if net is not None:
            # A step interrupted inside host.cmd() leaves that shell "waiting"; Mininet's
            # stop() would then assert. Interrupt the command and drain it first.
            for node in list(net.hosts) + list(net.switches):
                if getattr(node, 'waiting', False) and getattr(node, 'shell', None):
                    try:
                        with step('unstick-' + node.name, 5):
                            node.sendInt()
                            node.waitOutput()
                    except BaseException:
                        pass
                    node.waiting = False
            try:
                with step('net.stop', 60):
                    net.stop()
            except BaseException as e:     # fall back to a manual cleanup of our own objects
                err('net.stop', e)
                for br in sw_names:
                    with contextlib.suppress(Exception):
                        sh(['ovs-vsctl', '--if-exists', 'del-br', br], timeout=10)
                for node in list(net.hosts) + list(net.switches):
                    if getattr(node, 'shell', None) and node.shell.poll() is None:
                        kill_pid(node.shell.pid, node.shell, grace=0.1)   # interactive bash ignores TERM
        if proc is not None:
            kill_pid(proc.pid, proc)
            R['controller_killed_rc'] = proc.returncode
        if vsd and vsd0:
            v1 = proc_stats(vsd)
            if v1:
                R['vswitchd_cpu_s_run'] = round(v1['cpu_s'] - vsd0['cpu_s'], 2)
        R['finished_utc'] = datetime.datetime.utcnow().isoformat() + 'Z'
    return R


def burst(a, spec, ctx, net, proc, R, probes, sw_names):
    hosts = net.hosts
    h1, hl = hosts[0], hosts[-1]
    ph1, ph2 = hosts[1], hosts[-2]
    h1_intf = h1.defaultIntf()
    link = h1_intf.link
    sw_intf = link.intf2 if link.intf1 is h1_intf else link.intf1
    dst_mac = 'ff:ff:ff:ff:ff:ff' if a.burst_dst == 'broadcast' else hl.MAC()
    script = os.path.join(ctx.workdir, 'burst.py')
    with open(script, 'w') as f:
        f.write(BURST_PY)
    B = {'n': a.burst_n, 'dst': a.burst_dst, 'dst_mac': dst_mac, 'pps_limit': a.burst_pps,
         'ingress': str(sw_intf)}
    R['burst'] = B
    is_sa = spec.fail_mode == 'standalone' and not spec.launch

    def sample():
        flows = ctrlp = 0
        for sw in sw_names:
            p, n = aggregate(sw)
            flows += n or 0
            p2, _ = aggregate(sw, 'out_port=CONTROLLER')
            ctrlp += p2 or 0
        s = {'flows': flows, 'to_ctrl_pkts': ctrlp}
        if spec.pktin_counter:
            s['ctrl_pktin'] = spec.pktin_counter(ctx)
        if is_sa:
            s['fdb'] = sum(fdb_entries(sw) for sw in sw_names)
        return s

    with step('burst-baseline', 30):
        if spec.pktin_counter:
            spec.pktin_counter(ctx)           # prime incremental counters
        base = sample()
        rx0 = port_rx(sw_intf.node.name, sw_intf.node.ports[sw_intf])
        cov0 = {c: ovs_coverage(c) for c in ('packet_in_overflow', 'rconn_overflow')}
        sd0 = ovs_sock_drops()
        st0 = proc_stats(proc.pid) if proc else None
        vsd = vswitchd_pid()
        v0 = proc_stats(vsd) if vsd else None
        probe = ph1.popen(['ping', '-i', '0.05', '-W', '1', ph2.IP()],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        probes.append(probe)
        t_idle = time.monotonic()
        time.sleep(1.0)
        # the background: what the counters do without the burst (LLDP and other periodic
        # packet-ins tick them all the time for a controller that sends its own probes)
        idle = sample()
        dt_idle = time.monotonic() - t_idle
        bg = {k: max(0.0, ((idle.get(k) or 0) - (base.get(k) or 0)) / dt_idle)
              for k in ('to_ctrl_pkts', 'ctrl_pktin')}
        B['background_per_s'] = {k: round(v, 1) for k, v in bg.items()}

    def burst_change(prev_s, s, dt):
        """True if this sample moved more than the background would have."""
        if prev_s is None:
            return True
        if (s['flows'], s.get('fdb')) != (prev_s['flows'], prev_s.get('fdb')):
            return True
        for k in ('to_ctrl_pkts', 'ctrl_pktin'):
            if s.get(k) is not None and prev_s.get(k) is not None:
                # periodic packet-ins come in steps (every LLDP of a round at once): allow a
                # second's worth of the background in any one sample
                if s[k] - prev_s[k] > 1.5 * bg[k] * max(dt, 1.0) + 4:
                    return True
        return False

    with step('burst-send', 40):
        tb = time.monotonic()
        out = hcmd(h1, '/usr/bin/python3 %s %s %s %d %s %d' % (
            script, h1_intf, dst_mac, a.burst_n, a.burst_pps, a.seed), 30)
        m = re.search(r'BURST_JSON (\{.*\})', out)
        if not m:
            raise RuntimeError('burst sender failed: %s' % out.strip()[-300:])
        B.update(json.loads(m.group(1)))
        t_sent = time.monotonic() - tb

    series = []
    with step('burst-settle', 50):
        last_change = time.monotonic()
        prev, prev_t = None, None
        while True:
            s = sample()
            now = time.monotonic()
            s['t'] = round(now - tb, 3)
            series.append(s)
            if burst_change(prev, s, now - prev_t if prev else 0):
                last_change = now
            prev, prev_t = s, now
            if now - last_change >= a.settle_s and now - tb >= t_sent + a.settle_s:
                break
            if now - tb > 45:
                B['settle_timeout'] = True
                break
            time.sleep(0.25)

    with step('burst-collect', 20):
        with contextlib.suppress(ProcessLookupError):
            os.kill(probe.pid, signal.SIGINT)
        try:
            pout, _ = probe.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            kill_pid(probe.pid, probe)
            pout = ''
        B['probe'] = parse_ping(pout or '')
        B['probe_window_s'] = round(time.monotonic() - tb + 1.0, 2)
        rx1 = port_rx(sw_intf.node.name, sw_intf.node.ports[sw_intf])
        B['ingress_rx_pkts'] = rx1.get('rx_packets', 0) - rx0.get('rx_packets', 0)
        B['ingress_rx_dropped'] = rx1.get('rx_dropped', 0) - rx0.get('rx_dropped', 0)
        sd1 = ovs_sock_drops()
        B['ovs_sock_drops_ingress'] = sd1.get(str(sw_intf), 0) - sd0.get(str(sw_intf), 0)
        B['ovs_sock_drops_all'] = sum(sd1.values()) - sum(v for k, v in sd0.items() if k in sd1)
        for c, v in cov0.items():
            v1 = ovs_coverage(c)
            B['ovs_' + c] = (v1 - v) if (v is not None and v1 is not None) else None
        final = series[-1]
        B['flows_before'] = base['flows']
        B['flows_after'] = final['flows']
        added = final['flows'] - base['flows']
        B['flows_added'] = added
        B['flows_peak_added'] = max(x['flows'] for x in series) - base['flows']
        drops = [series[i - 1]['flows'] - series[i]['flows'] for i in range(1, len(series))]
        B['flows_max_drop'] = max([0] + drops)     # > 0: flows were removed during the burst
        # peak, not final: n_packets restart from 0 if a controller re-installs its flows
        B['to_ctrl_pkts'] = max(x['to_ctrl_pkts'] for x in series) - base['to_ctrl_pkts']
        # the burst's share: up to its last sample that moved more than the background did
        t_last_burst, last_burst = 0.0, None
        for i in range(1, len(series)):
            if burst_change(series[i - 1], series[i], series[i]['t'] - series[i - 1]['t']):
                t_last_burst, last_burst = series[i]['t'], series[i]
        if spec.pktin_counter and final.get('ctrl_pktin') is not None and base.get('ctrl_pktin') is not None:
            B['ctrl_pktin_raw'] = final['ctrl_pktin'] - base['ctrl_pktin']
            B['ctrl_pktin'] = (last_burst or series[0])['ctrl_pktin'] - base['ctrl_pktin']
        if is_sa:
            B['fdb_added'] = final['fdb'] - base['fdb']

        def first_t(metric, target):
            for s in series:
                if s.get(metric) is not None and s[metric] >= target:
                    return s['t']
            return None

        def last_change_t(metric):
            t_last, val = 0.0, base.get(metric)
            for s in series:
                if s.get(metric) != val:
                    t_last, val = s['t'], s.get(metric)
            return t_last

        if B['flows_max_drop'] > 0:
            B['note'] = 'flow count dropped during the burst (flows re-installed?); no flow timings'
        elif added > 0:
            B['flows_t90_s'] = first_t('flows', base['flows'] + 0.9 * added)
            B['flows_t100_s'] = first_t('flows', final['flows'])
            B['flows_per_s'] = round(added / B['flows_t100_s'], 1) if B['flows_t100_s'] else None
        if B.get('ctrl_pktin'):
            t_last = t_last_burst or last_change_t('ctrl_pktin')
            B['ctrl_pktin_last_s'] = t_last
            B['ctrl_pktin_per_s'] = round(B['ctrl_pktin'] / t_last, 1) if t_last else None
        if is_sa and B.get('fdb_added'):
            B['fdb_t100_s'] = first_t('fdb', final['fdb'])
        st1 = proc_stats(proc.pid) if proc else None
        if st0 and st1:
            B['ctrl_cpu_s'] = round(st1['cpu_s'] - st0['cpu_s'], 2)
        v1 = proc_stats(vsd) if vsd else None
        if v0 and v1:
            B['vswitchd_cpu_s'] = round(v1['cpu_s'] - v0['cpu_s'], 2)
        B['series'] = series


def cmd_run(a):
    def _term(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, _term)
    if os.geteuid() != 0:
        sys.exit('must run as root')
    check_ready([a.controller])
    import fcntl
    os.makedirs(RUNS, exist_ok=True)
    lockf = open(RUN_LOCK, 'w')   # one harness run at a time on this machine
    t = time.monotonic()
    while True:
        try:
            fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - t > 60:
                sys.exit('another peers.py run holds %s for > 60 s' % lockf.name)
            time.sleep(0.5)
    R = run_one(a)
    txt = json.dumps(R, indent=1, default=str)
    if a.json_out:
        with open(a.json_out, 'w') as f:
            f.write(txt)
    if not a.quiet:
        print(txt)
    return 0 if not R['errors'] else 2


# --------------------------------------------------------------------------- setup



# --------------------------------------------------------------------------- suite

DEFAULT_CONTROLLERS = 'standalone,ryu,faucet,opendvs'
PEERS_JSON = os.path.join(RESULTS, 'peers.json')


def cmd_suite(a):
    if os.geteuid() != 0:
        sys.exit('must run as root')
    controllers = a.controllers.split(',')
    for c in controllers:
        if c not in CONTROLLERS:
            sys.exit('unknown controller %s (have %s)' % (c, ', '.join(CONTROLLERS)))
    check_ready(controllers)
    started = datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')
    stamp = time.strftime('%Y%m%dT%H%M%S')
    os.makedirs(RUNS, exist_ok=True)
    plan = []
    for i in range(a.tree_repeats):            # interleave controllers to spread drift
        plan += [(c, 'tree', i + 1) for c in controllers]
    for i in range(a.linear_repeats):
        plan += [(c, 'linear', i + 1) for c in controllers]
    doc = {'facts': peers_table.machine_facts(), 'controllers': controllers, 'started': started,
           'repeats': {'tree': a.tree_repeats, 'linear': a.linear_repeats},
           'burst_n': a.burst_n, 'burst_pps': a.burst_pps, 'results': []}
    results = doc['results']
    out_json = a.json or PEERS_JSON
    for c, topo, i in plan:
        tag = '%s-%s-%d' % (c, topo, i)
        out = os.path.join(RUNS, 'run-%s-%s.json' % (stamp, tag))
        argv = [sys.executable, os.path.abspath(__file__), 'run', '--controller', c, '--topo', topo,
                '--tag', tag, '--json-out', out, '--quiet', '--burst-n', str(a.burst_n),
                '--burst-dst', a.burst_dst, '--burst-pps', str(a.burst_pps)]
        log('=== %s' % tag)
        p = subprocess.Popen(argv)
        try:
            p.wait(timeout=a.run_timeout)
        except subprocess.TimeoutExpired:
            log('run %s exceeded %ss, SIGTERM (cleanup runs in its finally)' % (tag, a.run_timeout))
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=90)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        try:
            with open(out) as f:
                r = json.load(f)
        except (OSError, ValueError) as e:
            r = {'controller': c, 'topo': topo, 'tag': tag, 'label': CONTROLLERS[c].label,
                 'topo_desc': topo, 'errors': ['no result file (rc=%s): %s' % (p.returncode, e)]}
        r.get('burst', {}).pop('series', None)          # the raw samples stay in the run's file
        results.append(r)
        doc['finished'] = datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')
        doc['medians'] = peers_table.medians(results, controllers)
        with open(out_json, 'w') as f:
            json.dump(doc, f, indent=1, default=str)
        time.sleep(a.pause)
    log('wrote %s' % out_json)
    if not a.no_readme:
        peers_table.update_readme(doc)
        log('regenerated the peers section of %s' % peers_table.README)
    print(peers_table.section(doc))
    return 0


def cmd_report(a):
    """Redraw the README section from a saved peers.json."""
    with open(a.json or PEERS_JSON) as f:
        doc = json.load(f)
    peers_table.update_readme(doc)
    print(peers_table.section(doc))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)

    def burst_opts(p):
        p.add_argument('--burst-n', type=int, default=2000, help='frames in the packet-in burst')
        p.add_argument('--burst-dst', choices=['known', 'broadcast'], default='known',
                       help="destination MAC: hlast's MAC (known) or ff:ff:ff:ff:ff:ff")
        p.add_argument('--burst-pps', type=float, default=10000,
                       help='send rate of the burst in frames/s (0 = as fast as the socket takes them)')

    pr = sub.add_parser('run', help='one measurement, JSON to stdout / --json-out')
    pr.add_argument('--controller', required=True, choices=sorted(CONTROLLERS))
    pr.add_argument('--topo', default='tree', choices=['tree', 'linear'])
    pr.add_argument('--tag')
    pr.add_argument('--json-out')
    pr.add_argument('--quiet', action='store_true', help='do not print the JSON to stdout')
    pr.add_argument('--seed', type=int, default=1, help='seed for the burst source MACs')
    pr.add_argument('--settle-s', type=float, default=3.0, help='burst: stop sampling after this long without change')
    burst_opts(pr)

    ps = sub.add_parser('suite', help='run the matrix, write bench/results/peers.json and the README table')
    ps.add_argument('--controllers', default=DEFAULT_CONTROLLERS)
    ps.add_argument('--tree-repeats', type=int, default=3)
    ps.add_argument('--linear-repeats', type=int, default=1)
    ps.add_argument('--json', help='output path (default bench/results/peers.json)')
    ps.add_argument('--no-readme', action='store_true', help='do not regenerate bench/README.md')
    ps.add_argument('--run-timeout', type=int, default=300, help='per-run wall limit before SIGTERM')
    ps.add_argument('--pause', type=float, default=2.0, help='seconds between runs')
    burst_opts(ps)

    pp = sub.add_parser('report', help='redraw the README section from bench/results/peers.json')
    pp.add_argument('--json')

    sub.add_parser('setup', help='bench/.venv-ryu and bench/.venv-faucet (idempotent)')
    sub.add_parser('list', help='the controllers and whether each is ready')
    a = ap.parse_args()
    if a.cmd == 'setup':
        return cmd_setup(a)
    if a.cmd == 'run':
        return cmd_run(a)
    if a.cmd == 'suite':
        return cmd_suite(a)
    if a.cmd == 'report':
        return cmd_report(a)
    for k, c in CONTROLLERS.items():
        msg = c.check() if c.check else None
        print('%-16s %-32s %s' % (k, c.label, 'ready' if not msg else 'not ready: ' + msg))
    return 0


if __name__ == '__main__':
    sys.exit(main())
