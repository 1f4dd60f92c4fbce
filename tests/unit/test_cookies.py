"""Cookies: compiled flows carry Cookie values; the registry gives them allocated, stable
64-bit values (app | kind | tenant id | owner id) and maps dumped values back, after a
restart too, with the YAML file:line each came from."""
import pytest

from controller.pipeline import cookies
from controller.pipeline.ids import IdStore


@pytest.mark.parametrize('app', sorted(cookies.APPS))
def test_app_round_trips(app):
    reg = cookies.Registry()
    c = cookies.make(app, 3, 'web-to-db', 'acme')
    assert cookies.app_of(c) == app
    assert cookies.app_of(reg.encode(c)) == app
    assert reg.decode(reg.encode(c)) == c


def test_layout_app_kind_tenant_owner():
    reg = cookies.Registry()
    v = reg.encode(cookies.make('vxlan_overlay', 2, 'servers', 'acme'))
    assert v >> 56 == 0x04
    assert (v >> 48) & 0xff == 2
    assert (v & cookies.TENANT_MASK) >> 24 == reg.ids.peek('tenant', 'acme') != 0
    assert v & cookies.OWNER_MASK == reg.ids.peek('owner', 'servers') != 0
    assert reg.encode(cookies.make('vxlan_overlay')) == 0x04 << 56        # no kind, tenant or owner


def test_ids_are_allocated_so_two_owners_never_share_one():
    reg = cookies.Registry()
    values = {reg.encode(cookies.make('microseg', 1, 'rule-%d' % i, 'acme')) for i in range(5000)}
    assert len(values) == 5000          # crc32 of 24 bits collided after about 2,000 names


def test_kind_is_kept_to_its_8_bits_and_never_spills_into_the_app():
    reg = cookies.Registry()
    assert cookies.app_of(reg.encode(cookies.make('topology', 0x1ff))) == 'topology'
    assert (reg.encode(cookies.make('topology', 0x1ff)) >> 48) & 0xff == 0xff


def test_unknown_app_is_refused_at_compile_time():
    with pytest.raises(ValueError, match="unknown app 'nope'"):
        cookies.make('nope')


def test_where_is_not_part_of_identity_but_is_remembered():
    reg = cookies.Registry()
    a = cookies.make('microseg', 5, 'ping-web', 'acme', where='acme.yaml:12')
    b = cookies.make('microseg', 5, 'ping-web', 'acme', where='acme.yaml:14')
    assert a == b and hash(a) == hash(b)          # moving a rule does not replace its flows
    v = reg.encode(b)
    assert reg.encode(a) == v
    fresh = cookies.Registry(reg.ids)             # decoding without the objects in memory
    assert fresh.decode(v).where == 'acme.yaml:12'


def test_describe_maps_a_cookie_back_to_app_kind_tenant_owner_and_line():
    c = cookies.make('microseg', 5, 'ping-web', 'acme', where='tenants/acme.yaml:14')
    assert cookies.describe(c) == 'microseg kind=5 tenant=acme owner=ping-web at tenants/acme.yaml:14'
    assert cookies.describe(cookies.make('learning_switch', 0)) == 'learning_switch kind=0 owner=-'


def test_values_we_did_not_make_decode_to_themselves():
    reg = cookies.Registry()
    assert reg.decode(0) == 0
    assert reg.decode(0x7f00_0000_0000_00ab) == 0x7f00_0000_0000_00ab       # unknown app
    assert reg.decode(0x0100_0000_0000_00ab) == 0x0100_0000_0000_00ab       # owner id nobody holds
    assert cookies.app_of(0x7f << 56) is None
    assert 'not in the registry' in cookies.describe(0x0100_0000_0000_00ab)


def test_the_registry_survives_a_restart(tmp_path):
    reg = cookies.Registry(IdStore(tmp_path))
    c = cookies.make('vlan_portgroups', 1, 'web1/nic0', 'acme', where='acme.yaml:9')
    v = reg.encode(c)
    reg.save()
    again = cookies.Registry(IdStore(tmp_path))
    got = again.decode(v)
    assert got == c and got.where == 'acme.yaml:9'
    assert again.encode(c) == v
    assert again.tenant_match('acme') == (v & cookies.TENANT_MASK, cookies.TENANT_MASK)


def test_app_match_selects_every_flow_of_that_app_and_no_other():
    reg = cookies.Registry()
    made = {app: [reg.encode(cookies.make(app, k, o, t)) for k in (0, 1, 255) for o in (None, 'a', 'b/c')
                  for t in (None, 'acme')] for app in cookies.APPS}
    for app in cookies.APPS:
        value, mask = cookies.app_match(app)
        assert mask == 0xff << 56
        for other, cs in made.items():
            for c in cs:
                assert (c & mask == value) == (other == app), (app, other, hex(c))


def test_tenant_match_selects_one_tenant_whatever_the_app():
    reg = cookies.Registry()
    acme = [reg.encode(cookies.make(app, 1, 'x', 'acme')) for app in cookies.APPS]
    other = [reg.encode(cookies.make(app, 1, 'x', 'globex')) for app in cookies.APPS]
    value, mask = reg.tenant_match('acme')
    assert all(c & mask == value for c in acme)
    assert not any(c & mask == value for c in other)
