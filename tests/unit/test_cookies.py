"""Cookies: app, kind and owner survive a round trip, and one app's mask selects only it."""
import pytest

from controller.pipeline import cookies


@pytest.mark.parametrize('app', sorted(cookies.APPS))
def test_app_round_trips(app):
    assert cookies.app_of(cookies.make(app, 3, 'acme/web-to-db')) == app


def test_layout_app_kind_owner():
    c = cookies.make('vxlan_overlay', 2, 'acme/servers')
    assert c >> 56 == 0x04
    assert (c >> 48) & 0xff == 2
    assert c & cookies.OWNER_MASK == cookies.owner_id('acme/servers') != 0
    assert cookies.make('vxlan_overlay') == 0x04 << 56        # no kind, no owner


def test_kind_is_kept_to_its_8_bits_and_never_spills_into_the_app():
    assert cookies.app_of(cookies.make('topology', 0x1ff)) == 'topology'
    assert (cookies.make('topology', 0x1ff) >> 48) & 0xff == 0xff


def test_describe_maps_a_dumped_cookie_back_to_app_kind_owner():
    c = cookies.make('microseg', 5, 'acme/ping-web')
    assert cookies.describe(c) == 'microseg kind=5 owner=acme/ping-web'
    assert cookies.describe(cookies.make('learning_switch', 0)) == 'learning_switch kind=0 owner=-'


def test_describe_of_cookies_we_did_not_make():
    assert cookies.describe(0) == 'unknown-app-0 kind=0 owner=-'
    assert cookies.describe(0x7f00_0000_0000_00ab) == 'unknown-app-127 kind=0 owner=0xab'
    assert cookies.app_of(0x7f << 56) is None


def test_owner_id_is_stable():
    assert cookies.owner_id('acme/web-to-db') == cookies.owner_id('acme/web-to-db')
    assert cookies.owner_id('acme/web-to-db') != cookies.owner_id('acme/ping-web')


def test_app_match_selects_every_flow_of_that_app_and_no_other():
    made = {app: [cookies.make(app, k, o) for k in (0, 1, 255) for o in (None, 'a', 'b/c')]
            for app in cookies.APPS}
    for app in cookies.APPS:
        value, mask = cookies.app_match(app)
        assert mask == 0xff << 56
        for other, cs in made.items():
            for c in cs:
                assert (c & mask == value) == (other == app), (app, other, hex(c))
