"""The web view in a real browser (issue 14, part 2): Debian's headless Chromium, driven through
chromedriver by Selenium, opens /view?token=... of a real controller that runs a real lab,
finds the fabric, the hypervisors and the workloads where they are bound, the tunnel in use
and the switches' sessions; then a VM moves (Lab.move_vm) and a leaf's session drops and comes
back, and the page follows both within seconds, without a reload.  The event log (part 3) has
the apply, the disconnect and the reconnect.  A failing check saves a screenshot and the page's
data to the test's tmp dir; OPENDVS_SCREENSHOT=FILE saves one of the final page (README)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil

import pytest

from tests.support import ROOT, ControllerProcess, free_port, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
# a VLAN network across racks, an overlay network between hv1 and hv3 (a tunnel), and a VM
# that will move
VIEW = '''tenant: view
networks:
  web: {vlan: 10, subnet: 10.71.0.0/24, gateway: 10.71.0.1}
  ov:  {vni: 5071, subnet: 10.72.0.0/24, gateway: 10.72.0.1}
workloads:
  web1: {hypervisor: hv1, nics: [{network: web, mac: "02:00:47:00:00:01", ip: 10.71.0.11}]}
  web2: {hypervisor: hv3, nics: [{network: web, mac: "02:00:47:00:00:02", ip: 10.71.0.12}]}
  ov1:  {hypervisor: hv1, nics: [{network: ov,  mac: "02:00:48:00:00:01", ip: 10.72.0.11}]}
  ov2:  {hypervisor: hv3, nics: [{network: ov,  mac: "02:00:48:00:00:02", ip: 10.72.0.12}]}
security: {default: allow}
'''

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason='needs root: network namespaces, veths, root OVS'),
]


def _browser(tmp):
    """Headless Chromium from Debian, through Debian's chromedriver (no download: Selenium
    Manager is never asked, the driver's path is given)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which('chromium'), shutil.which('chromedriver')
    assert chromium and driver, 'chromium and chromium-driver are installed by scripts/setup.sh'
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              '--window-size=1600,1000', '--user-data-dir=%s' % (tmp / 'chromium')):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver, log_output=str(tmp / 'chromedriver.log')), options=opts)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    from mininet_topos import Lab
    work = tmp_path_factory.mktemp('webview')
    (work / 'view.yaml').write_text(VIEW)
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=[str(work / 'view.yaml')])
    browser = None
    try:
        r = ctl.dvsctl('apply', str(work / 'view.yaml'))
        assert r.returncode == 0, r.stderr
        lab.up(timeout=60)
        browser = _browser(work)
        browser.set_page_load_timeout(30)
        yield lab, ctl, browser
    finally:
        if browser is not None:
            browser.quit()
        lab.down()
        ctl.stop()


@contextlib.contextmanager
def screenshot_on_failure(browser, tmp_path):
    try:
        yield
    except BaseException:
        browser.save_screenshot(str(tmp_path / 'webview-failure.png'))
        (tmp_path / 'webview-failure.json').write_text(json.dumps(data(browser), indent=1))
        print('screenshot: %s' % (tmp_path / 'webview-failure.png'))
        raise


def data(browser):
    return browser.execute_script('return window.opendvs && window.opendvs.state.data')


def cells(browser, table, key_attr, cls):
    """{row key: text of its cell of class cls} of one of the page's tables, as shown."""
    return browser.execute_script(
        'const out = {}; for (const tr of document.querySelectorAll(`#${arguments[0]} tbody tr`))'
        '  out[tr.getAttribute(arguments[1])] = tr.querySelector("td." + arguments[2]).textContent;'
        'return out;', table, key_attr, cls)


def edge(browser, id):
    return browser.execute_script('const e = window.opendvs.edges.get(arguments[0]); '
                                  'return e ? [e.from, e.to] : null;', id)


def nearest(browser, node, others):
    """Of `others`, the node drawn nearest (left to right) to `node`."""
    pos = browser.execute_script('return window.opendvs.network.getPositions(arguments[0])', [node] + others)
    return min(others, key=lambda o: abs(pos[o]['x'] - pos[node]['x']))


def test_the_page_shows_the_lab_and_follows_a_move_and_a_reconnect(env, tmp_path):
    lab, ctl, browser = env
    token = (ctl.state_dir / 'api-token').read_text().strip()
    base = 'http://127.0.0.1:%d' % ctl.api_port
    browser.get(base + '/view?token=wrong')
    assert 'needs the API token' in browser.page_source                      # refused
    browser.get(base + '/view?token=' + token)
    with screenshot_on_failure(browser, tmp_path):
        assert browser.current_url == base + '/view'                         # the token left the URL
        wait_until(lambda: browser.execute_script('return window.opendvs.state.updates') > 0, 20,
                   what='the page drew its first picture')
        # the fabric: every switch and hypervisor drawn, every session up
        ids = set(browser.execute_script('return window.opendvs.nodes.getIds()'))
        assert {'sw:spine1', 'sw:spine2', 'sw:leaf1', 'sw:leaf2', 'hv:hv1', 'hv:hv2', 'hv:hv3', 'hv:hv4'} <= ids
        wait_until(lambda: set(cells(browser, 'switches', 'data-name', 'session').values()) == {'connected'}, 30,
                   what='every session connected (settled) on the page')
        assert edge(browser, 'uplink:hv1') == ['sw:leaf1', 'hv:hv1']
        wait_until(lambda: {h['name']: h['uplink_status'] for h in data(browser)['hypervisors']} == dict.fromkeys(
            ('hv1', 'hv2', 'hv3', 'hv4'), 'ok'), 20, what='every uplink seen (LLDP; hv1: both ends of its bond)')
        assert browser.execute_script('return window.opendvs.edges.get("uplink:hv1").label') == 'lacp x2'
        # the workloads where they are bound, and the tunnel between hv1 and hv3
        wait_until(lambda: cells(browser, 'workloads', 'data-id', 'hv') == {
            'view/web1': 'hv1', 'view/web2': 'hv3', 'view/ov1': 'hv1', 'view/ov2': 'hv3'}, 20,
            what='the four VMs on their hypervisors')
        assert edge(browser, 'place:view/ov1') == ['hv:hv1', 'vm:view/ov1']
        assert cells(browser, 'tunnels', 'data-pair', 'vnis') == {'hv1-hv3': '5071 (view/ov)'}
        assert cells(browser, 'networks', 'data-id', 'bound') == {'view/ov': '2/2', 'view/web': '2/2'}
        # the MACs a leaf holds, by tenant: the VLAN network's, never the overlay's
        wait_until(lambda: {s['name']: s for s in data(browser)['switches']}['leaf1']['macs_by_tenant'].get('view'),
                   15, what='leaf1 shown holding view\'s VLAN MACs')
        assert 'view:2' in cells(browser, 'switches', 'data-name', 'macs')['leaf1']           # web1, web2
        assert all(s['flows'] > 0 for s in data(browser)['switches'] + data(browser)['hypervisors'])

        # ov1 moves to hv2: the page follows (no reload): its row, its edge, the tunnel
        before = browser.execute_script('return window.opendvs.state.updates')
        lab.move_vm(lab.vm_of('view', 'ov1'), 'hv2')
        wait_until(lambda: cells(browser, 'workloads', 'data-id', 'hv')['view/ov1'] == 'hv2', 20,
                   what='ov1 shown on hv2')
        assert edge(browser, 'place:view/ov1') == ['hv:hv2', 'vm:view/ov1']
        wait_until(lambda: nearest(browser, 'vm:view/ov1', ['hv:hv1', 'hv:hv2']) == 'hv:hv2', 10,
                   what='ov1 drawn under hv2')
        wait_until(lambda: cells(browser, 'tunnels', 'data-pair', 'vnis') == {'hv2-hv3': '5071 (view/ov)'}, 10,
                   what='the tunnel now between hv2 and hv3')
        assert browser.execute_script('return window.opendvs.state.updates') > before

        # leaf2's session drops, then comes back
        bridge = lab.bridge('leaf2')
        targets = lab.vsctl('leaf2', 'get-controller', bridge).split()
        lab.vsctl('leaf2', 'del-controller', bridge)
        try:
            wait_until(lambda: cells(browser, 'switches', 'data-name', 'session')['leaf2'] == 'disconnected', 20,
                       what='leaf2 shown disconnected')
            assert browser.execute_script('return window.opendvs.nodes.get("sw:leaf2").borderWidth') == 3
        finally:
            lab.vsctl('leaf2', 'set-controller', bridge, *targets)
        wait_until(lambda: cells(browser, 'switches', 'data-name', 'session')['leaf2'] in ('settling', 'connected'),
                   20, what='leaf2 shown connected again')
        wait_until(lambda: 'reconnect' in [e['event'] for e in data(browser)['events']], 10,
                   what='the reconnect in the page\'s events')
        if os.environ.get('OPENDVS_SCREENSHOT'):
            wait_until(lambda: set(cells(browser, 'switches', 'data-name', 'session').values()) == {'connected'}, 30,
                       what='settled again, for the screenshot')
            browser.save_screenshot(os.environ['OPENDVS_SCREENSHOT'])

    # the event log (part 3): the apply by dvsctl, leaf2's disconnect and reconnect
    r = ctl.dvsctl('events', '--json')
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    apply = [e for e in events if e['event'] == 'apply']
    assert apply and apply[0]['by'] == '127.0.0.1' and apply[0]['tenants_added'] == ['view']
    leaf2 = [e['event'] for e in events if e.get('switch') == 'leaf2']
    assert leaf2[:3] == ['connect', 'disconnect', 'reconnect'], leaf2
    back = [e for e in events if e.get('switch') == 'leaf2' and e['event'] == 'reconnect'][0]
    assert back['down_s'] > 0 and back['kind'] == 'physical'
    if os.environ.get('OPENDVS_SCREENSHOT'):                  # the README's example too
        with open(os.environ['OPENDVS_SCREENSHOT'] + '.events.txt', 'w') as f:
            f.write(ctl.dvsctl('events').stdout)
