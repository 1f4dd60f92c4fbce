"""bench/routing.py's in-process part on a small generated data center: the anycast gateway's
flow count per hypervisor is what the README says it is, and fabricgen's gateways knob turns
routing off (its defaults, which test_incremental and bench/compile.py use, keep gateways)."""
from bench import routing
from bench.fabricgen import tenants


def test_the_gateway_flow_formula_holds_and_no_gateway_means_no_routing_flows():
    r = routing._flows_one(1000, 2)
    assert r['tenants'] == 500 and r['hypervisors'] == 100
    rows = r['routed'].values()
    assert len(rows) == routing.SAMPLE
    assert all(row['anycast_formula_matches'] and row['per_app'][routing.ROUTING_APP] > 0 for row in rows)
    # 10 local nics from 10 tenants of 2 nics each: 20 host routes
    assert {(row['routing_tenants'], row['routed_nics'], row['local_nics']) for row in rows} == {(10, 20, 10)}
    assert all(routing.ROUTING_APP not in row['per_app'] for row in r['no_gateways'].values())
    # a host route per located nic of the tenants that route here, in l3
    assert all(row['per_table'][routing.ROUTING_APP + ':l3'] >= row['routed_nics'] for row in rows)


def test_fabricgen_defaults_keep_gateways_and_ten_networks_per_tenant():
    ts = tenants(20, 40)
    assert len(ts) == 2 and all(len(t.networks) == 10 for t in ts)
    assert all(n.gateway is not None for t in ts for n in t.networks.values())
    assert all(n.gateway is None for t in tenants(20, 40, gateways=False) for n in t.networks.values())
