"""Tenant policy loader: every check with the exact LINE:COL it reports, the cross-file checks
against examples/fabric.yaml, the examples themselves and dvsctl validate on tenant files."""
import dataclasses
import ipaddress
import pathlib
import subprocess
import sys

import pytest

from controller.cli import dvsctl
from controller.policy import model
from controller.policy.errors import PolicyError
from controller.policy.fabric import load_fabric, parse_fabric
from controller.policy.tenant import (check_tenants, load_policy, load_tenant, parse_tenant,
                                      tenant_doc)
from controller.policy.yamlsource import parse_yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
FABRIC = ROOT / 'examples' / 'fabric.yaml'
ACME, GLOBEX = ROOT / 'examples' / 'tenants' / 'acme.yaml', ROOT / 'examples' / 'tenants' / 'globex.yaml'
DVSCTL = pathlib.Path(sys.executable).parent / 'dvsctl'

# Line 3: users' vlan value at 3:17, subnet 3:29, gateway 3:52.  Line 4: servers' vni at 4:19.
NETS = ('tenant: acme\n'
        'networks:\n'
        '  users: {vlan: 10, subnet: 10.10.0.0/24, gateway: 10.10.0.1}\n'
        '  servers: {vni: 5020, subnet: 10.20.0.0/24, gateway: 10.20.0.1}\n')
# Line 6: web1's nics at 6:31, its nic's network value at 6:42, mac 6:54, ip 6:79.
BASE = NETS + ('workloads:\n'
               '  web1: {labels: [web], nics: [{network: users, mac: "02:00:0a:0a:00:0b", ip: 10.10.0.11}]}\n')
RULES = BASE + 'security:\n  rules:\n'          # the first rule is on line 9


def wl(name='web2', network='users', mac='02:00:0a:0a:00:0c', ip='10.10.0.12', extra=''):
    """A one-nic workload line: its nic's network value is at col 18 (for web2), mac and ip follow."""
    return '  %s: {%snics: [{network: %s, mac: "%s", ip: %s}]}\n' % (name, extra, network, mac, ip)


def rule(frm='{label: web}', to='{label: web}', allow='[{proto: tcp, port: 80}]', name='r1', extra=''):
    return '    - {name: %s, from: %s, to: %s, allow: %s%s}\n' % (name, frm, to, allow, extra)


def net(line):
    return NETS + '  ' + line + '\n'            # a third network on line 5 (value at 5:3)


# (yaml text, "LINE:COL: message prefix"); each case must produce exactly that one error.
CASES = [
    # YAML level and top-level shape
    ('tenant: acme\ntenant: globex\nnetworks: {n: {vlan: 5, subnet: 10.0.0.0/24}}\n',
     "2:1: duplicate key 'tenant' (first defined at 1:1)"),
    ('- tenant\n', '1:1: a tenant policy is a mapping with keys tenant, networks, workloads, security; got list'),
    ('tenant: acme\n', "1:1: missing required key 'networks'"),
    ('networks: {n: {vlan: 5, subnet: 10.0.0.0/24}}\n', "1:1: missing required key 'tenant'"),
    (BASE + 'workload: {}\n', "7:1: unknown key 'workload' (allowed: networks, security, tenant, workloads); "
                              "did you mean 'workloads'?"),
    # tenant name
    (NETS.replace('acme', 'Acme'), "1:9: tenant: invalid tenant name 'Acme': it starts with a lower-case letter"),
    (NETS.replace('acme', 'a' * 33), "1:9: tenant: invalid tenant name 'aaaa"),
    (NETS.replace('acme', 'ac_me'), "1:9: tenant: invalid tenant name 'ac_me'"),
    (NETS.replace('acme', '7'), '1:9: tenant: expected a string, got integer 7'),
    # networks: shape, names, keys
    ('tenant: acme\nnetworks: {}\n', '2:1: networks: define at least one network'),
    ('tenant: acme\nnetworks:\n', '2:1: networks: define at least one network'),
    ('tenant: acme\nnetworks: [users]\n', '2:11: networks: expected a mapping of NAME: {...}, got list'),
    (net('1net: {vlan: 30, subnet: 10.30.0.0/24}'), "5:3: networks: invalid name '1net': a name starts with a letter"),
    (net('web/1: {vlan: 30, subnet: 10.30.0.0/24}'), "5:3: networks: invalid name 'web/1'"),
    (net('dmz: {vni: 30, vlna: 30, subnet: 10.30.0.0/24}'),
     "5:18: networks.dmz: unknown key 'vlna' (allowed: gateway, subnet, vlan, vni); did you mean 'vlan'?"),
    (net('dmz: 30'), '5:8: networks.dmz: expected a mapping, got integer 30'),
    (net('dmz: {vlan: 30}'), "5:3: networks.dmz: missing required key 'subnet'"),
    # networks: vlan / vni
    (net('dmz: {vlan: 30, vni: 30, subnet: 10.30.0.0/24}'), '5:19: networks.dmz: give either vlan or vni, not both'),
    (net('dmz: {subnet: 10.30.0.0/24}'), '5:3: networks.dmz: needs exactly one of vlan (a VLAN port-group, 2..4094) or vni'),
    (net('dmz: {vlan: 1, subnet: 10.30.0.0/24}'), "5:15: networks.dmz.vlan: VLAN 1 is the fabric's untagged (native) VLAN"),
    (net('dmz: {vlan: 0, subnet: 10.30.0.0/24}'), '5:15: networks.dmz.vlan: 0 is out of range 2..4094'),
    (net('dmz: {vlan: 4095, subnet: 10.30.0.0/24}'), '5:15: networks.dmz.vlan: 4095 is out of range 2..4094'),
    (net('dmz: {vlan: "30", subnet: 10.30.0.0/24}'), "5:15: networks.dmz.vlan: expected an integer in 2..4094, got string '30'"),
    (net('dmz: {vlan: true, subnet: 10.30.0.0/24}'), '5:15: networks.dmz.vlan: expected an integer in 2..4094, got boolean true'),
    (net('dmz: {vni: 0, subnet: 10.30.0.0/24}'), '5:14: networks.dmz.vni: 0 is out of range 1..16777215'),
    (net('dmz: {vni: 16777216, subnet: 10.30.0.0/24}'), '5:14: networks.dmz.vni: 16777216 is out of range 1..16777215'),
    (net('dmz: {vlan: 10, subnet: 10.30.0.0/24}'), "5:15: networks.dmz.vlan: VLAN 10 is already used by network 'users' (3:17)"),
    (net('dmz: {vni: 5020, subnet: 10.30.0.0/24}'), "5:14: networks.dmz.vni: VNI 5020 is already used by network 'servers' (4:18)"),
    # networks: subnet and gateway
    (net('dmz: {vlan: 30, subnet: 10.30.0.1/24}'), "5:27: networks.dmz.subnet: '10.30.0.1/24' has host bits set; did you mean 10.30.0.0/24?"),
    (net('dmz: {vlan: 30, subnet: 10.30.0.0}'), "5:27: networks.dmz.subnet: '10.30.0.0' has no prefix length"),
    (net('dmz: {vlan: 30, subnet: 10.30.0.0/33}'), "5:27: networks.dmz.subnet: '10.30.0.0/33' is not a valid IPv4 network"),
    (net('dmz: {vlan: 30, subnet: fd00::/64}'), "5:27: networks.dmz.subnet: 'fd00::/64' is not a valid IPv4 network"),
    (net('dmz: {vlan: 30, subnet: 24}'), '5:27: networks.dmz.subnet: expected an IPv4 network like 10.10.0.0/24, got integer 24'),
    (net('dmz: {vlan: 30, subnet: 224.0.0.0/24}'), '5:27: networks.dmz.subnet: 224.0.0.0/24 is not a unicast subnet'),
    (net('dmz: {vlan: 30, subnet: 10.0.0.0/8}'),
     "5:27: networks.dmz.subnet: subnet 10.0.0.0/8 overlaps 10.10.0.0/24 of network 'users' (3:29)"),
    (net('dmz: {vlan: 30, subnet: 10.20.0.128/25}'),
     "5:27: networks.dmz.subnet: subnet 10.20.0.128/25 overlaps 10.20.0.0/24 of network 'servers' (4:32)"),
    (net('dmz: {vlan: 30, subnet: 10.30.0.0/24, gateway: 10.31.0.1}'),
     '5:50: networks.dmz.gateway: gateway 10.31.0.1 is not inside subnet 10.30.0.0/24'),
    (net('dmz: {vlan: 30, subnet: 10.30.0.0/24, gateway: 10.30.0.0}'),
     '5:50: networks.dmz.gateway: gateway 10.30.0.0 is the network or broadcast address of subnet 10.30.0.0/24'),
    (net('dmz: {vlan: 30, subnet: 10.30.0.0/24, gateway: 10.30.0.255}'),
     '5:50: networks.dmz.gateway: gateway 10.30.0.255 is the network or broadcast address'),
    (net('dmz: {vlan: 30, subnet: 10.30.0.0/24, gateway: 10.30.0.1/24}'),
     "5:50: networks.dmz.gateway: '10.30.0.1/24' is not a valid IPv4 address; write the address without a prefix length"),
    (net('dmz: {vlan: 30, subnet: 10.30.0.0/24, gateway: 10.30.0.300}'),
     "5:50: networks.dmz.gateway: '10.30.0.300' is not a valid IPv4 address"),
    # workloads: shape, names, keys
    (NETS + 'workloads: [web1]\n', '5:12: workloads: expected a mapping of NAME: {...}, got list'),
    (BASE + wl(name='2web'), "7:3: workloads: invalid name '2web'"),
    (BASE + wl(extra='hv: hv1, '), "7:10: workloads.web2: unknown key 'hv' (allowed: hypervisor, labels, nics)"),
    (BASE + '  web2: {labels: [web]}\n', "7:3: workloads.web2: missing required key 'nics'"),
    (BASE + '  web2: {nics: []}\n', '7:16: workloads.web2.nics: a workload needs at least one nic'),
    (BASE + '  web2: {nics: ~}\n', '7:16: workloads.web2.nics: a workload needs at least one nic'),
    (BASE + '  web2: {nics: {network: users}}\n', '7:16: workloads.web2.nics: expected a list, got mapping'),
    (BASE + '  web2: [nic]\n', '7:9: workloads.web2: expected a mapping, got list'),
    (BASE + wl(extra='hypervisor: 7, '), '7:22: workloads.web2.hypervisor: expected a string, got integer 7'),
    (BASE + wl(extra='hypervisor: "hv 1", '), "7:22: workloads.web2.hypervisor: invalid hypervisor name 'hv 1'"),
    # labels
    (BASE + wl(extra='labels: web, '), "7:18: workloads.web2.labels: expected a list, got string 'web'"),
    (BASE + wl(extra='labels: [Web], '), "7:19: workloads.web2.labels[0]: invalid label 'Web'"),
    (BASE + wl(extra='labels: [1web], '), "7:19: workloads.web2.labels[0]: invalid label '1web'"),
    (BASE + wl(extra='labels: [7], '), '7:19: workloads.web2.labels[0]: expected a string, got integer 7'),
    (BASE + wl(extra='labels: [web, db, web], '), "7:28: workloads.web2.labels[2]: label 'web' is listed twice (first at labels[0])"),
    # nics
    (BASE + '  web2: {nics: [users]}\n', "7:17: workloads.web2.nics[0]: expected a mapping, got string 'users'"),
    (BASE + '  web2: {nics: [{network: users, mac: "02:00:00:00:00:01"}]}\n', "7:17: workloads.web2.nics[0]: missing required key 'ip'"),
    (BASE + wl(ip='10.10.0.12, vlan: 10'), "7:76: workloads.web2.nics[0]: unknown key 'vlan' (allowed: ip, mac, network)"),
    (BASE + wl(network='dmz'), "7:27: workloads.web2.nics[0].network: network 'dmz' is not defined in networks (known: servers, users)"),
    (BASE + wl(network='[users]'), '7:27: workloads.web2.nics[0].network: expected a string, got list'),
    # MAC
    (BASE + wl(mac='02:00:0a:0a:00'), "7:39: workloads.web2.nics[0].mac: '02:00:0a:0a:00' is not a MAC address: six hex pairs"),
    (BASE + wl(mac='02-00-0a-0a-00-0c'), "7:39: workloads.web2.nics[0].mac: '02-00-0a-0a-00-0c' is not a MAC address"),
    (BASE + wl(mac='02:00:0a:0a:00:0g'), "7:39: workloads.web2.nics[0].mac: '02:00:0a:0a:00:0g' is not a MAC address"),
    (BASE + wl(mac='01:00:5e:00:00:01'), '7:39: workloads.web2.nics[0].mac: 01:00:5e:00:00:01 is not a unicast MAC address'),
    (BASE + wl(mac='FF:FF:FF:FF:FF:FF'), '7:39: workloads.web2.nics[0].mac: ff:ff:ff:ff:ff:ff is not a unicast MAC address'),
    (BASE + wl(mac='00:00:00:00:00:00'), '7:39: workloads.web2.nics[0].mac: 00:00:00:00:00:00 is not a unicast MAC address'),
    (BASE + wl(mac='02:00:0A:0A:00:0B'),
     '7:39: workloads.web2.nics[0].mac: MAC 02:00:0a:0a:00:0b is already used by workloads.web1.nics[0].mac (6:54)'),
    (BASE + wl(mac='02:00:0a:0a:00:0b', network='servers', ip='10.20.0.12'),
     '7:41: workloads.web2.nics[0].mac: MAC 02:00:0a:0a:00:0b is already used by workloads.web1.nics[0].mac (6:54)'),
    (BASE + '  web2: {nics: [{network: users, mac: 12:34:56:00:00:02, ip: 10.10.0.12}]}\n',
     '7:39: workloads.web2.nics[0].mac: expected a MAC address string, got integer 9783936002: YAML reads an unquoted MAC'),
    # IP
    (BASE + wl(ip='10.10.1.12'), "7:64: workloads.web2.nics[0].ip: 10.10.1.12 is not inside subnet 10.10.0.0/24 of network 'users'"),
    (BASE + wl(ip='10.10.0.1'), "7:64: workloads.web2.nics[0].ip: 10.10.0.1 is the gateway of network 'users'"),
    (BASE + wl(ip='10.10.0.0'), '7:64: workloads.web2.nics[0].ip: 10.10.0.0 is the network or broadcast address of subnet 10.10.0.0/24'),
    (BASE + wl(ip='10.10.0.255'), '7:64: workloads.web2.nics[0].ip: 10.10.0.255 is the network or broadcast address'),
    (BASE + wl(ip='10.10.0.12/24'), "7:64: workloads.web2.nics[0].ip: '10.10.0.12/24' is not a valid IPv4 address; write the address"),
    (BASE + wl(ip='10.10.0.11'),
     "7:64: workloads.web2.nics[0].ip: IP 10.10.0.11 is already used on network 'users' by workloads.web1.nics[0].ip (6:79)"),
    (BASE + '  web2: {nics: [{network: users, mac: "02:00:0a:0a:00:0c", ip: 10.10.0.12}, '
            '{network: users, mac: "02:00:0a:0a:00:0d", ip: 10.10.0.12}]}\n',
     "7:124: workloads.web2.nics[1].ip: IP 10.10.0.12 is already used on network 'users' by workloads.web2.nics[0].ip (7:64)"),
    # security: shape
    (BASE + 'security: [deny]\n', '7:11: security: expected a mapping, got list'),
    (BASE + 'security: {default: permit}\n', "7:21: security.default: expected deny or allow, got string 'permit'"),
    (BASE + 'security: {deflt: deny}\n', "7:12: security: unknown key 'deflt' (allowed: default, rules); did you mean 'default'?"),
    (BASE + 'security: {rules: {r1: {}}}\n', '7:19: security.rules: expected a list, got mapping'),
    (RULES + '    - web-to-db\n', "9:7: security.rules[0]: expected a mapping, got string 'web-to-db'"),
    # rules: keys and names
    (RULES + '    - {from: {label: web}, to: {label: web}, allow: [{proto: any}]}\n', "9:7: security.rules[0]: missing required key 'name'"),
    (RULES + '    - {name: r1, from: {label: web}, to: {label: web}}\n', "9:7: security.rules[0]: missing required key 'allow'"),
    (RULES + rule(extra=', action: allow'), "9:89: security.rules[0]: unknown key 'action' (allowed: allow, from, name, to)"),
    (RULES + rule(name='"r 1"'), "9:14: security.rules[0].name: invalid rule name 'r 1'"),
    (RULES + rule(name='7'), '9:14: security.rules[0].name: expected a string, got integer 7'),
    (RULES + rule() + rule(allow='[{proto: icmp}]'), "10:14: security.rules[1].name: rule name 'r1' is already used by security.rules[0] (9:14)"),
    # rules: endpoints
    (RULES + rule(frm='{label: web, cidr: 0.0.0.0/0}'), '9:24: security.rules[0].from: give exactly one of cidr, label, network, workload (got label, cidr)'),
    (RULES + rule(to='{}'), '9:42: security.rules[0].to: give exactly one of cidr, label, network, workload'),
    (RULES + rule(frm='{host: web1}'), "9:25: security.rules[0].from: unknown key 'host' (allowed: cidr, label, network, workload)"),
    (RULES + rule(frm='web'), "9:24: security.rules[0].from: expected a mapping, got string 'web'"),
    (RULES + rule(to='{label: db}'), "9:50: security.rules[0].to.label: label 'db' matches no workload (labels in use: web)"),
    (RULES + rule(to='{label: Web}'), "9:50: security.rules[0].to.label: invalid label 'Web'"),
    (RULES + rule(to='{workload: db1}'), "9:53: security.rules[0].to.workload: workload 'db1' is not defined in workloads (known: web1)"),
    (RULES + rule(to='{network: dmz}'), "9:52: security.rules[0].to.network: network 'dmz' is not defined in networks (known: servers, users)"),
    (RULES + rule(to='{workload: 7}'), '9:53: security.rules[0].to.workload: expected a string, got integer 7'),
    (RULES + rule(frm='{cidr: 10.0.0.1/8}'), "9:31: security.rules[0].from.cidr: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
    (RULES + rule(frm='{cidr: 10.0.0.1}'), "9:31: security.rules[0].from.cidr: '10.0.0.1' has no prefix length"),
    # rules: allow
    (RULES + rule(allow='[]'), '9:63: security.rules[0].allow: a rule allows at least one thing'),
    (RULES + rule(allow='{proto: tcp}'), '9:63: security.rules[0].allow: expected a list, got mapping'),
    (RULES + rule(allow='[{port: 80}]'), "9:64: security.rules[0].allow[0]: missing required key 'proto'"),
    (RULES + rule(allow='[{proto: gre}]'), "9:72: security.rules[0].allow[0].proto: expected one of tcp, udp, icmp, any, got string 'gre'"),
    (RULES + rule(allow='[{proto: TCP}]'), "9:72: security.rules[0].allow[0].proto: expected one of tcp, udp, icmp, any, got string 'TCP'"),
    (RULES + rule(allow='[{proto: tcp, dport: 80}]'), "9:77: security.rules[0].allow[0]: unknown key 'dport' (allowed: port, ports, proto, type); did you mean 'port'?"),
    (RULES + rule(allow='[{proto: tcp, port: 0}]'), '9:83: security.rules[0].allow[0].port: 0 is out of range 1..65535'),
    (RULES + rule(allow='[{proto: tcp, port: 65536}]'), '9:83: security.rules[0].allow[0].port: 65536 is out of range 1..65535'),
    (RULES + rule(allow='[{proto: tcp, port: "80"}]'), "9:83: security.rules[0].allow[0].port: expected an integer in 1..65535, got string '80'"),
    (RULES + rule(allow='[{proto: icmp, port: 80}]'), '9:78: security.rules[0].allow[0]: port needs proto tcp or udp (icmp has no ports)'),
    (RULES + rule(allow='[{proto: tcp, type: 8}]'), '9:77: security.rules[0].allow[0]: type needs proto icmp (tcp has no ICMP type)'),
    (RULES + rule(allow='[{proto: icmp, type: 300}]'), '9:84: security.rules[0].allow[0].type: 300 is out of range 0..255'),
    (RULES + rule(allow='[{proto: any, ports: "1-1024"}]'), '9:77: security.rules[0].allow[0]: ports needs proto tcp or udp (any has no ports)'),
    (RULES + rule(allow='[{proto: udp, port: 53, ports: "53-54"}]'), '9:87: security.rules[0].allow[0]: give port or ports, not both'),
    (RULES + rule(allow='[{proto: udp, ports: "8100-8000"}]'), '9:84: security.rules[0].allow[0].ports: port range 8100-8000 is backwards; write 8000-8100'),
    (RULES + rule(allow='[{proto: udp, ports: "0-100"}]'), '9:84: security.rules[0].allow[0].ports: ports 0-100 are out of range 1..65535'),
    (RULES + rule(allow='[{proto: udp, ports: "1-65536"}]'), '9:84: security.rules[0].allow[0].ports: ports 1-65536 are out of range 1..65535'),
    (RULES + rule(allow='[{proto: udp, ports: "80"}]'), '9:84: security.rules[0].allow[0].ports: expected a port range like "8000-8100", got string \'80\''),
    (RULES + rule(allow='[{proto: udp, ports: 80}]'),
     '9:84: security.rules[0].allow[0].ports: expected a port range like "8000-8100", got integer 80; use `port:` for a single port'),
]


def _errors(text):
    with pytest.raises(PolicyError) as exc:
        parse_tenant(text, 'acme.yaml')
    return exc.value.diags


@pytest.mark.parametrize('text,expected', CASES, ids=[c[1][:60] for c in CASES])
def test_tenant_errors(text, expected):
    diags = _errors(text)
    got = [f'{d.line}:{d.col}: {d.message}' for d in diags]
    assert len(diags) == 1, got
    assert got[0].startswith(expected), got
    assert str(diags[0]).startswith('acme.yaml:')


def test_the_cases_are_valid_without_their_mistake():
    """The scaffolding the cases share is itself a valid tenant."""
    parse_tenant(BASE + wl() + 'security:\n  rules:\n' + rule(), 'acme.yaml')


def test_all_problems_reported_in_file_order():
    text = (NETS.replace('acme', 'Acme') + '  dmz: {vlan: 1, subnet: 10.30.0.0/24}\n'
            'workloads:\n' + wl(mac='01:00:00:00:00:01') + 'security:\n  rules:\n' + rule(frm='{cidr: 0.0.0.0/0}', to='{label: db}'))
    diags = _errors(text)
    assert [(d.line, d.col) for d in diags] == [(1, 9), (5, 15), (7, 39), (10, 55)]
    assert str(PolicyError(diags)).splitlines()[0].startswith("acme.yaml:1:9: tenant: invalid tenant name 'Acme'")


def test_parsed_model():
    t = parse_tenant(BASE + wl(name='db1', network='servers', mac='02:00:0A:14:00:15', ip='10.20.0.21',
                               extra='hypervisor: hv2, labels: [db], ')
                     + 'security:\n  default: allow\n  rules:\n'
                     + rule(name='web-to-db', to='{label: db}', allow='[{proto: tcp, port: 5432}]')
                     + rule(name='any-in', frm='{cidr: 0.0.0.0/0}', to='{workload: web1}',
                            allow='[{proto: icmp}, {proto: udp, ports: "8000-8100"}, {proto: any}, {proto: icmp, type: 8}]')
                     + rule(name='net', frm='{network: users}', to='{network: servers}', allow='[{proto: tcp}]'),
                     'acme.yaml')
    assert t.name == 'acme' and t.source == 'acme.yaml'
    assert t.networks['users'] == model.Network('users', ipaddress.IPv4Network('10.10.0.0/24'), vlan=10,
                                                gateway=ipaddress.IPv4Address('10.10.0.1'))
    assert t.networks['servers'].vni == 5020 and t.networks['servers'].vlan is None
    db1 = t.workloads['db1']
    assert db1 == model.Workload('db1', ('db',), (model.Nic(0, 'servers', '02:00:0a:14:00:15',
                                                            ipaddress.IPv4Address('10.20.0.21')),), 'hv2')
    assert t.workloads['web1'].hypervisor is None and t.workloads['web1'].labels == ('web',)
    assert list(t.workloads) == ['web1', 'db1']
    sec = t.security
    assert sec.default == 'allow' and [r.name for r in sec.rules] == ['web-to-db', 'any-in', 'net']
    assert [r.line for r in sec.rules] == [11, 12, 13]
    assert sec.rules[0].src == model.Endpoint(label='web') and sec.rules[0].allow == (model.Allow('tcp', (5432, 5432)),)
    assert sec.rules[1].src == model.Endpoint(cidr=ipaddress.IPv4Network('0.0.0.0/0'))
    assert sec.rules[1].dst == model.Endpoint(workload='web1')
    assert sec.rules[1].allow == (model.Allow('icmp'), model.Allow('udp', (8000, 8100)), model.Allow('any'),
                                  model.Allow('icmp', icmp_type=8))
    assert sec.rules[2].src == model.Endpoint(network='users') and sec.rules[2].allow == (model.Allow('tcp'),)
    assert t.iface_id('db1', 0) == 'acme/db1/nic0'


def test_defaults_and_optional_sections():
    t = parse_tenant('tenant: t\nnetworks: {n: {vlan: 5, subnet: 10.0.0.0/31}}\nworkloads:\nsecurity:\n')
    assert t.source == '<tenant>' and dict(t.workloads) == {} and t.security == model.Security(default='allow')   # no section: open inside
    assert t.networks['n'].gateway is None
    # /31 has no network or broadcast address (RFC 3021): both addresses are usable
    t = parse_tenant('tenant: t\nnetworks: {n: {vlan: 5, subnet: 10.0.0.0/31}}\nworkloads:\n'
                     '  a: {nics: [{network: n, mac: "02:00:00:00:00:01", ip: 10.0.0.0}]}\n'
                     '  b: {nics: [{network: n, mac: "02:00:00:00:00:02", ip: 10.0.0.1}]}\n')
    assert [w.nics[0].ip for w in t.workloads.values()] == list(ipaddress.IPv4Network('10.0.0.0/31'))


# --- cross-file checks ------------------------------------------------------------------------

ACME_T = ('tenant: acme\n'
          'networks:\n'
          '  users: {vlan: 10, subnet: 10.10.0.0/24}\n'
          '  over: {vni: 5020, subnet: 10.20.0.0/24}\n'
          'workloads:\n'
          '  web1: {hypervisor: hv1, nics: [{network: users, mac: "02:00:00:00:00:01", ip: 10.10.0.11}]}\n')


def _globex(networks='  apps: {vlan: 30, subnet: 10.10.0.0/24}\n',
            nic='{network: apps, mac: "02:00:00:00:00:02", ip: 10.10.0.11}', hv='hv2', name='globex'):
    """Line 3: the first network (vlan/vni value at 3:16); line 5: the workload (hypervisor value
    at 5:22, nic network value at 5:44, mac at 5:55 with the default network name)."""
    return (f'tenant: {name}\nnetworks:\n{networks}workloads:\n'
            f'  app1: {{hypervisor: {hv}, nics: [{nic}]}}\n')


def _cross(fabric, *texts):
    tenants = [parse_tenant(text, f'{i}.yaml') for i, text in enumerate(texts)]
    with pytest.raises(PolicyError) as exc:
        check_tenants(fabric, tenants)
    return [str(d) for d in exc.value.diags]


@pytest.fixture(scope='module')
def example_fabric():
    return load_fabric(FABRIC)


CROSS = [
    (_globex(networks='  apps: {vlan: 10, subnet: 10.10.0.0/24}\n'),
     "1.yaml:3:16: networks.apps.vlan: VLAN 10 is already used by tenant 'acme' (0.yaml:3:17)"),
    (_globex(networks='  apps: {vni: 5020, subnet: 10.10.0.0/24}\n'),
     "1.yaml:3:15: networks.apps.vni: VNI 5020 is already used by tenant 'acme' (0.yaml:4:15)"),
    (_globex(nic='{network: apps, mac: "02:00:00:00:00:01", ip: 10.10.0.11}'),
     "1.yaml:5:55: workloads.app1.nics[0].mac: MAC 02:00:00:00:00:01 is already used by tenant 'acme' (0.yaml:6:56)"),
    (_globex(name='acme', networks='  apps: {vlan: 10, subnet: 10.10.0.0/24}\n'),
     "1.yaml:1:9: tenant: tenant 'acme' is already defined in 0.yaml:1:9"),
    (_globex(hv='hv9'),
     "1.yaml:5:22: workloads.app1.hypervisor: hypervisor 'hv9' is not in the fabric %s (known: hv1, hv2, hv3, hv4)" % FABRIC),
    (_globex(networks='  apps: {vlan: 50, subnet: 10.10.0.0/24}\n'),
     "1.yaml:5:44: workloads.app1.nics[0].network: network 'apps' is VLAN 50, but hypervisor 'hv2' (its hint) "
     'only trunks VLANs 10, 20, 30, 40'),
]


@pytest.mark.parametrize('other,expected', CROSS, ids=[c[1][:70] for c in CROSS])
def test_cross_file_errors(example_fabric, other, expected):
    assert _cross(example_fabric, ACME_T, other) == [expected]


def test_native_vlan_of_the_fabric_is_refused():
    fabric = parse_fabric(FABRIC.read_text().replace('native_vlan: 1', 'native_vlan: 30'), 'fab.yaml')
    assert _cross(fabric, ACME_T, _globex(hv='hv9')) == [
        "1.yaml:3:16: networks.apps.vlan: VLAN 30 is the fabric's native VLAN (untagged frames; native_vlan in fab.yaml)",
        "1.yaml:5:22: workloads.app1.hypervisor: hypervisor 'hv9' is not in the fabric fab.yaml (known: hv1, hv2, hv3, hv4)"]


def test_trunk_of_a_hypervisor_without_vlans():
    fabric = parse_fabric(FABRIC.read_text().replace('vtep: 172.16.1.12, trunk_vlans: [10, 20, 30, 40]', 'vtep: 172.16.1.12'))
    assert _cross(fabric, _globex()) == [
        "0.yaml:5:44: workloads.app1.nics[0].network: network 'apps' is VLAN 30, but hypervisor 'hv2' (its hint) "
        'only trunks VLANs none']


def test_vni_networks_and_unhinted_workloads_need_no_trunk(example_fabric):
    check_tenants(example_fabric, [parse_tenant(_globex(networks='  apps: {vni: 77, subnet: 10.10.0.0/24}\n')),
                                   parse_tenant(ACME_T.replace('hypervisor: hv1, ', ''))])


def test_without_a_fabric_only_tenants_are_compared():
    assert _cross(None, ACME_T, _globex(hv='hv9', networks='  apps: {vlan: 10, subnet: 10.10.0.0/24}\n')) == [
        "1.yaml:3:16: networks.apps.vlan: VLAN 10 is already used by tenant 'acme' (0.yaml:3:17)"]


def test_a_duplicate_tenant_is_reported_once_not_for_each_of_its_claims(example_fabric):
    assert _cross(example_fabric, ACME_T, ACME_T) == ["1.yaml:1:9: tenant: tenant 'acme' is already defined in 0.yaml:1:9"]


def test_every_clash_is_reported_in_the_later_file(example_fabric):
    third = _globex(name='initech', networks='  apps: {vlan: 10, subnet: 10.10.0.0/24}\n',
                    nic='{network: apps, mac: "02:00:00:00:00:02", ip: 10.10.0.11}')
    got = _cross(example_fabric, ACME_T, _globex(), third)
    assert got == ["2.yaml:3:16: networks.apps.vlan: VLAN 10 is already used by tenant 'acme' (0.yaml:3:17)",
                   "2.yaml:5:55: workloads.app1.nics[0].mac: MAC 02:00:00:00:00:02 is already used by tenant 'globex' (1.yaml:5:55)"]


def test_explicit_docs_and_hand_built_tenants(example_fabric):
    acme = parse_tenant(ACME_T, 'acme.yaml')
    other = parse_tenant(_globex(networks='  apps: {vlan: 10, subnet: 10.10.0.0/24}\n'), 'globex.yaml')
    assert tenant_doc(acme).file == 'acme.yaml'
    # a Tenant made by hand (or copied) has no positions: its source at 1:1
    copy = dataclasses.replace(other, source='pushed.yaml')
    assert tenant_doc(copy) is None
    with pytest.raises(PolicyError) as exc:
        check_tenants(example_fabric, [acme, copy])
    assert str(exc.value) == "pushed.yaml:1:1: networks.apps.vlan: VLAN 10 is already used by tenant 'acme' (acme.yaml:3:17)"
    # ... unless its document is passed along
    doc = parse_yaml(_globex(networks='  apps: {vlan: 10, subnet: 10.10.0.0/24}\n'), 'given.yaml')
    with pytest.raises(PolicyError) as exc:
        check_tenants(example_fabric, [acme, copy], docs=[tenant_doc(acme), doc])
    assert str(exc.value).startswith('given.yaml:3:16: networks.apps.vlan: VLAN 10')
    with pytest.raises(ValueError):
        check_tenants(example_fabric, [acme, copy], docs=[doc])


def test_load_policy_reports_every_file(tmp_path, example_fabric):
    a, b, c = tmp_path / 'a.yaml', tmp_path / 'b.yaml', tmp_path / 'c.yaml'
    a.write_text(ACME_T)
    b.write_text(_globex(networks='  apps: {vlan: 10, subnet: 10.10.0.0/24}\n'))
    c.write_text('tenant: c\nnetworks: {}\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(example_fabric, [a, b, c])
    assert [str(d) for d in exc.value.diags] == [
        f"{b}:3:16: networks.apps.vlan: VLAN 10 is already used by tenant 'acme' ({a}:3:17)",
        f'{c}:2:1: networks: define at least one network, e.g. users: {{vlan: 10, subnet: 10.10.0.0/24}}']


# --- the examples -----------------------------------------------------------------------------

def test_examples_load_and_pass_the_cross_checks(example_fabric):
    acme, globex = load_policy(example_fabric, [ACME, GLOBEX])
    assert (acme.name, globex.name) == ('acme', 'globex') and acme.source == str(ACME)
    assert {n: (x.vlan, str(x.subnet)) for n, x in acme.networks.items()} == {
        'users': (10, '10.10.0.0/24'), 'servers': (20, '10.20.0.0/24')}
    assert {n: (x.vlan, str(x.subnet)) for n, x in globex.networks.items()} == {
        'apps': (30, '10.10.0.0/24'), 'data': (40, '10.20.0.0/24')}
    hvs = example_fabric.hypervisors
    for t, per_network in ((acme, 2), (globex, 2)):
        for net in t.networks:
            placed = [w.hypervisor for w in t.workloads.values() if w.nics[0].network == net]
            assert len(placed) == per_network
            assert len({hvs[h].leaf for h in placed}) == 2, f'{t.name}/{net} should span both leaves'
        assert all(len(w.nics) == 1 for w in t.workloads.values())
    assert sorted(w.hypervisor for w in acme.workloads.values()) == ['hv1', 'hv2', 'hv3', 'hv4']
    assert sorted(w.hypervisor for w in globex.workloads.values()) == ['hv1', 'hv2', 'hv3', 'hv4']
    macs = [n.mac for t in (acme, globex) for w in t.workloads.values() for n in w.nics]
    assert len(set(macs)) == len(macs) and all(m.startswith('02:00:') for m in macs)
    # isolation is by tenant: globex reuses acme's user addresses on purpose
    ips = lambda t: {n.ip for w in t.workloads.values() for n in w.nics}
    assert ips(globex) <= ips(acme)
    for t in (acme, globex):
        assert t.security.default == 'allow' and t.security.rules
    assert load_tenant(ACME).security.rules[0].line == 29


# --- dvsctl validate --------------------------------------------------------------------------

def test_validate_examples(capsys):
    assert dvsctl.main(['validate', str(ACME), str(GLOBEX), '--fabric', str(FABRIC)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f'{ACME}: ok\n{GLOBEX}: ok\n', '')
    # the one fabric among the files serves for the cross-file checks too
    assert dvsctl.main(['validate', str(FABRIC), str(ACME), str(GLOBEX)]) == 0
    assert capsys.readouterr().out == f'{FABRIC}: ok\n{ACME}: ok\n{GLOBEX}: ok\n'


def test_validate_bad_tenant(tmp_path, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(BASE + wl(ip='10.10.1.12'))
    assert dvsctl.main(['validate', str(ACME), str(bad), '--fabric', str(FABRIC)]) == 1
    out, err = capsys.readouterr()
    assert out == f'{ACME}: ok\n'
    # the clash with acme.yaml (same tenant name) is reported alongside the file's own error
    assert err.splitlines() == [
        f"{bad}:1:9: tenant: tenant 'acme' is already defined in {ACME}:4:9",
        f"{bad}:7:64: workloads.web2.nics[0].ip: 10.10.1.12 is not inside subnet 10.10.0.0/24 of network 'users'"]


def test_validate_cross_file(tmp_path, capsys):
    clash = tmp_path / 'initech.yaml'
    clash.write_text(_globex(name='initech', hv='hv9', networks='  apps: {vlan: 20, subnet: 10.10.0.0/24}\n'))
    assert dvsctl.main(['validate', str(ACME), str(clash), '--fabric', str(FABRIC)]) == 1
    out, err = capsys.readouterr()
    assert out == f'{ACME}: ok\n'
    assert err.splitlines() == [
        f"{clash}:3:16: networks.apps.vlan: VLAN 20 is already used by tenant 'acme' ({ACME}:11:19)",
        f"{clash}:5:22: workloads.app1.hypervisor: hypervisor 'hv9' is not in the fabric {FABRIC} (known: hv1, hv2, hv3, hv4)"]
    # without a fabric, tenants are still compared with each other
    assert dvsctl.main(['validate', str(ACME), str(clash)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{clash}:3:16: networks.apps.vlan: VLAN 20 is already used by tenant 'acme' ({ACME}:11:19)"]


def test_validate_with_a_broken_or_wrong_fabric(tmp_path, capsys):
    fab = tmp_path / 'fab.yaml'
    fab.write_text('switches: {}\n')
    assert dvsctl.main(['validate', str(ACME), '--fabric', str(fab)]) == 1
    out, err = capsys.readouterr()
    assert out == f'{ACME}: ok\n' and err == f'{fab}:1:1: switches: define at least one switch, e.g. spine1: {{dpid: 0x101}}\n'
    assert dvsctl.main(['validate', str(ACME), '--fabric', str(GLOBEX)]) == 1
    assert capsys.readouterr().err == f'{GLOBEX}:1:1: --fabric: this is a tenant policy, not a fabric\n'


def test_validate_installed_script(tmp_path):
    assert DVSCTL.exists(), 'run: .venv/bin/pip install -e .'
    ok = subprocess.run([DVSCTL, 'validate', '--fabric', FABRIC, ACME, GLOBEX], capture_output=True, text=True)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f'{ACME}: ok\n{GLOBEX}: ok\n', '')
    bad = tmp_path / 'bad.yaml'
    bad.write_text(RULES + rule(to='{label: db}'))
    r = subprocess.run([DVSCTL, 'validate', bad], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (1, '')
    assert r.stderr == f"{bad}:9:50: security.rules[0].to.label: label 'db' matches no workload (labels in use: web)\n"


def test_a_small_underlay_mtu_names_the_overlay_networks_it_cannot_carry(example_fabric):
    import dataclasses
    small = dataclasses.replace(example_fabric, underlay_mtu=1500)
    t = parse_tenant('tenant: initech\nnetworks:\n  apps: {vni: 5020, subnet: 10.50.0.0/24}\n'
                     '  lan: {vlan: 10, subnet: 10.51.0.0/24}\n', 'initech.yaml')
    with pytest.raises(PolicyError) as e:
        check_tenants(small, [t])
    assert [str(d) for d in e.value.diags] == [
        "initech.yaml:3:15: networks.apps.vni: overlay network 'apps' cannot carry 1500-byte frames: VXLAN adds "
        "50 bytes and the underlay MTU is 1500 (underlay.mtu in %s; needs at least 1550)" % example_fabric.source]
    check_tenants(dataclasses.replace(example_fabric, underlay_mtu=1550), [t])      # enough: no error
