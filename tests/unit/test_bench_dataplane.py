"""bench/dataplane.py's and bench/tcp_rr.py's pure parts: reading OVS's counters, the
per-round ratios and goals, the table and the README section it replaces (no lab)."""
import socket
import threading

import pytest

from bench import dataplane as dp
from bench import tcp_rr

PMD = '''main thread:
  packets received: 1000
  packet recirculations: 500
  avg. datapath passes per packet: 1.50
  phwol hits: 0
  mfex opt hits: 0
  simple match hits: 0
  emc hits: 900
  smc hits: 0
  megaflow hits: 590
  avg. subtable lookups per megaflow hit: 1.20
  miss with success upcall: 10
  miss with failed upcall: 0
  avg. packets per output batch: 1.10
  idle cycles: 0 (0.00%)
  processing cycles: 2000000 (100.00%)
  avg cycles per packet: 2000.00 (2000000/1000)
  avg processing cycles per packet: 2000.00 (2000000/1000)
pmd thread numa_id 0 core_id 1:
  packets received: 1000
  packet recirculations: 0
  avg. datapath passes per packet: 1.00
  miss with success upcall: 2
  processing cycles: 1000000 (100.00%)
'''


def test_pmd_stats_are_summed_over_threads_and_give_passes_and_cycles_per_packet():
    s = dp.parse_pmd_stats(PMD)
    assert s['packets_received'] == 2000 and s['packet_recirculations'] == 500
    assert s['miss_with_success_upcall'] == 12 and s['emc_hits'] == 900
    assert s['passes_per_packet'] == pytest.approx(1.25)
    assert s['cycles_per_packet'] == pytest.approx(1500)
    assert not any(k.startswith('avg') for k in s)          # OVS's own averages are per thread
    assert dp.parse_pmd_stats('main thread:\n  packets received: 0\n')['passes_per_packet'] == 0.0


def test_coverage_totals_and_only_changed_counters_in_the_delta():
    before = dp.parse_coverage('Event coverage, avg rate over last: 5 seconds, hash=1:\n'
                               'upcall_flow_limit_hit     0.0/sec     0.000/sec        0.0000/sec   total: 0\n'
                               'dpif_flow_put              1.2/sec     0.100/sec        0.0100/sec   total: 40\n'
                               'recirc_id_alloc          0.0/sec     0.000/sec        0.0000/sec   total: 7\n')
    assert before == {'upcall_flow_limit_hit': 0, 'dpif_flow_put': 40, 'recirc_id_alloc': 7}
    after = dict(before, dpif_flow_put=52, new_counter=3)
    assert dp.coverage_delta(before, after) == {'dpif_flow_put': 12, 'new_counter': 3}


def test_datapath_flows_count_recirculation_conntrack_and_tunnels():
    text = ('recirc_id(0),in_port(3),packet_type(ns=0,id=0),eth_type(0x0800),ipv4(frag=no), packets:10, '
            'bytes:1000, used:0.1s, actions:ct(zone=5),recirc(0x1)\n'
            'recirc_id(0x1),in_port(3),ct_state(+trk+est), packets:0, bytes:0, used:never, '
            'actions:clone(tnl_push(tnl_port(4),header(size=50,type=4)),out_port(2)),1)\n'
            'tunnel(tun_id=0x13e9),recirc_id(0),in_port(4), packets:3, bytes:300, used:0.2s, actions:5\n'
            'recirc_id(0),in_port(1),eth_type(0x0800), packets:7, bytes:70, used:0.1s, actions:tnl_pop(4)\n')
    assert dp.parse_dp_flows(text) == {'megaflows': 4, 'with_packets': 3, 'recirc': 1, 'ct': 1,
                                       'tnl_push': 1, 'tnl_pop': 1}
    assert dp.parse_dp_flows('')['megaflows'] == 0


def _round(gbps_o, gbps_n, rtt_o, rtt_n):
    base = {k: 1.0 for k, *_ in dp.ROWS}
    return {'opendvs': dict(base, gbps=gbps_o, ping_avg_ms=rtt_o, retransmits=0),
            'normal': dict(base, gbps=gbps_n, ping_avg_ms=rtt_n, retransmits=0)}


def test_ratios_are_per_round_and_goals_judge_their_median():
    s = dp.summarize([_round(0.9, 1.0, 0.2, 0.1), _round(1.8, 2.0, 0.11, 0.1), _round(0.5, 1.0, 0.1, 0.1)])
    r = s['ratio_opendvs_over_normal']
    assert r['gbps'] == {'min': 0.5, 'median': 0.9, 'max': 0.9}
    assert r['ping_avg_ms'] == {'min': 1.0, 'median': 1.1, 'max': 2.0}
    assert 'retransmits' not in r                          # 0 on NORMAL: no ratio
    assert s['goals']['gbps'] == {'ratio_median': 0.9, 'bound': 0.9, 'met': True}
    assert s['goals']['ping_avg_ms']['met'] and s['goals']['ping_avg_ms']['bound'] == 1.111
    assert 'ping_max_ms' not in s['goals']                 # a figure without a goal
    missed = dp.summarize([_round(0.8, 1.0, 0.3, 0.1)] * 3)['goals']
    assert not missed['gbps']['met'] and not missed['ping_avg_ms']['met']
    assert s['normal']['gbps'] == {'min': 1.0, 'median': 1.0, 'max': 2.0}


def test_table_has_a_row_per_figure_and_says_which_goal_is_missed():
    t = dp.table(dp.summarize([_round(0.8, 1.0, 0.1, 0.1)] * 2)).splitlines()
    assert len(t) == 2 + len(dp.ROWS)
    gbps = next(line for line in t if line.startswith('| iperf3 TCP throughput'))
    assert '| 1.000 | 0.800 | 0.80 | ≥ 0.90: **missed** |' in gbps
    rtt = next(line for line in t if line.startswith('| ping rtt avg'))
    assert rtt.endswith('| 1.00 | ≤ 1.11: met |')


def test_readme_section_is_replaced_in_place_or_appended():
    new = dp.HEADING + '\n\nnew body\n'
    text = '# Benchmarks\n\n## A\n\na\n\n' + dp.HEADING + '\n\nold body\n\n## B\n\nb\n'
    assert dp.update_readme(text, new) == '# Benchmarks\n\n## A\n\na\n\n' + new + '\n## B\n\nb\n'
    last = '# Benchmarks\n\n' + dp.HEADING + '\n\nold\n'
    assert dp.update_readme(last, new) == '# Benchmarks\n\n' + new
    assert dp.update_readme('# Benchmarks\n\n## A\n', new) == '# Benchmarks\n\n## A\n\n' + new
    again = dp.update_readme(dp.update_readme(text, new), new)
    assert again.count(dp.HEADING) == 1 and 'old body' not in again


def test_latency_summary_uses_nearest_rank_percentiles():
    s = tcp_rr.summary([float(i) for i in range(100, 0, -1)])
    assert (s['n'], s['min_us'], s['median_us'], s['p90_us'], s['p99_us'], s['max_us']) == (100, 1, 50.5, 90, 99, 100)
    assert tcp_rr.summary([7.0])['p99_us'] == 7.0
    with pytest.raises(ValueError):
        tcp_rr.summary([])


def test_rr_and_crr_against_the_echo_server_on_loopback_and_a_closed_port_is_an_error():
    srv = tcp_rr._Server(('127.0.0.1', 0), tcp_rr._Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        assert len(tcp_rr.rr('127.0.0.1', port, 50)) == 50
        assert len(tcp_rr.crr('127.0.0.1', port, 5)) == 5
    finally:
        srv.shutdown()
        srv.server_close()
    with socket.socket() as s:                             # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        closed = s.getsockname()[1]
    with pytest.raises(OSError):
        tcp_rr.rr('127.0.0.1', closed, 1)


def test_alternating_rounds_start_each_round_with_the_next_kind():
    from bench.labrun import alternating_rounds
    seen = []
    rounds = alternating_rounds({'a': 1, 'b': 2, 'c': 3}, 4, lambda k: seen.append(k) or k.upper())
    assert seen == list('abc' 'bca' 'cab' 'abc')
    assert rounds[1] == {'b': 'B', 'c': 'C', 'a': 'A'} and list(rounds[2]) == ['c', 'a', 'b']


def test_section_renders_a_whole_document_under_its_heading():
    rounds = [_round(0.95, 1.0, 0.1, 0.1) for _ in range(3)]
    for r in rounds:
        r['opendvs']['ping_lost'] = r['normal']['ping_lost'] = 0
    doc = {'runs': 3, 'started': '2026-12-02 05:40', 'finished': '2026-12-02 05:45',
           'facts': {'hostname': 'vm', 'nproc': '2', 'cpu_model': 'cpu', 'memory': '1 GiB', 'ovs': 'ovs 3.1',
                     'load_average_start': '0.5'},
           'checks': {'ttl': {'opendvs': [63], 'normal': [64]}, 'denied_port_refused_opendvs': True,
                      'denied_port_open_normal': True, 'reverse_ping_refused_opendvs': False,
                      'reverse_ping_normal': True},
           'rounds': rounds, 'summary': dp.summarize(rounds)}
    text = dp.section(doc)
    assert text.startswith(dp.HEADING + '\n\n') and text.endswith('dataplane.json.\n')
    assert '2026-12-02 05:40 – 05:45 UTC on `vm`' in text and 'median (min–max) of 3 rounds' in text
    assert 'refused **no**' in text                        # a failed check is shown as such
    assert dp.table(doc['summary']) in text
