"""How the lab tells a loopback-only controller (unreachable from the hypervisors' namespaces)
from one listening on every address: the LISTEN sockets of /proc/net/tcp and tcp6."""
from mininet_topos import osutil

TCP = '''  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:19FD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:19FD 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0101FEA9:1A0B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1
'''
TCP6 = '''  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:19FD 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000001000000:1A0B 00000000000000000000000000000000:0000 0A
   2: 0000000000000000FFFF00000100007F:1A0C 00000000000000000000000000000000:0000 0A
'''


def test_listening_addresses_per_port():
    assert osutil.parse_listeners(TCP, 6653) == {'127.0.0.1'}      # the ESTABLISHED one is not a listener
    assert osutil.parse_listeners(TCP, 8080) == {'0.0.0.0'}
    assert osutil.parse_listeners(TCP, 6667) == {'169.254.1.1'}
    assert osutil.parse_listeners(TCP, 1) == set()
    assert osutil.parse_listeners(TCP6, 6653, osutil._ip6) == {'::'}
    assert osutil.parse_listeners(TCP6, 6667, osutil._ip6) == {'::1'}
    assert osutil.parse_listeners(TCP6, 6668, osutil._ip6) == {'127.0.0.1'}


def test_only_loopback_means_someone_listens_but_not_for_the_lab():
    assert osutil.only_loopback({'127.0.0.1'}) and osutil.only_loopback({'127.0.0.1', '::1'})
    assert not osutil.only_loopback(set())                  # nobody yet: the lab may wait for it
    assert not osutil.only_loopback({'127.0.0.1', '0.0.0.0'})
    assert not osutil.only_loopback({'::'})
