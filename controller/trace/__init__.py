"""`dvsctl trace`: a packet followed through the real switches with ofproto/trace, each
step mapped back to the app, tenant and YAML line that made its flow (issue 14).

    ofproto.py   parse `ovs-appctl ofproto/trace` text and its datapath actions (pure)
    walk.py      follow the packet from switch to switch (uplink, fabric, tunnel) until it is
                 delivered to a VM port, leaves the fabric or is dropped
    explain.py   each step as `switch table -> decision` and the verdict
    service.py   the controller side: the packet a nic would send, where each switch's
                 vswitchd is reached, the API view
    macs.py      `dvsctl show macs`: MAC-table footprint per physical switch
"""
