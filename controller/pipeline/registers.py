"""The packet's context as it crosses the pipeline, named once (OVN keeps it in registers too).

Ingress stages write these; later stages match on them instead of guessing from the VLAN tag:

    reg0   ECMP      the equal-cost next hop index the multipath hash chose (underlay routing)
    reg11  NETWORK   the logical network (port-group / overlay) id of the frame; 0 = native VLAN
    reg12  TENANT    the tenant (VRF) id; 0 = the fabric itself
    reg13  ZONE      the conntrack zone of the tenant (ct(zone=NXM_NX_REG13[0..15]))
    reg14  IN_PORT   the logical in-port (reserved: the in_port field serves for now)
    reg15  OUT_PORT  the port l2_lookup / l3 chose; FLOOD means "every port of the flood set"

Ids come from controller.pipeline.ids (stable while their owner exists).
"""
from __future__ import annotations

ECMP = 'reg0'
NETWORK = 'reg11'
TENANT = 'reg12'
ZONE = 'reg13'
IN_PORT = 'reg14'
OUT_PORT = 'reg15'

FLOOD = 0xfffe          # OUT_PORT value for broadcast, unknown unicast and multicast

ALL = (ECMP, NETWORK, TENANT, ZONE, IN_PORT, OUT_PORT)
