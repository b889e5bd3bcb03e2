"""The IPv6 rules load into a real nftables (#16): the whole generated
ruleset for dual-stack, IPv6-only, routed and internal networks with
published ports, applied with ``nft -j -f`` inside the sandbox host
namespace, listed back, and compared by the driver's drift check with a
rebuild (nothing the kernel rewrote or refused)."""

from __future__ import annotations

import json
import subprocess

from fw6data import _net, _pub, _v4only
from nsnet import kernel as k
from nsnet.firewall import rules as fw
from nsnet.firewall.nft import NftablesDriver


def _world():
    plain, dual = _v4only(5), _net(1)
    only6, routed = _net(2, v4=False, icc=False), _net(3, ipv6_mode="routed")
    internal = _net(4, v4=False, internal=True)
    nets = [plain, dual, only6, routed, internal]
    pubs = (_pub(dual, "8080:80") + _pub(dual, "[2001:db8::1]:5353:53/udp", 1)
            + _pub(only6, "[::]:9090:90") + _pub(routed, "8081:81"))
    return nets, pubs


def test_generated_ipv6_ruleset_is_valid_nft_json(sandbox):
    nets, pubs = _world()
    batch = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}},
                                     *fw.full(nets, pubs)]})
    done = subprocess.run(["nsenter", f"--net={sandbox.host_path}", "nft", "-j", "-f", "-"],
                          input=batch, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listing = sandbox.host("nft", "list", "table", "ip6", "nsnet").stdout
    assert "ip6 saddr != fd00:1::/64 drop" in listing
    assert "fib daddr type local dnat to meta l4proto . th dport map @ports_any_addr" in listing
    assert 'oifname @routed ip6 daddr . meta l4proto . th dport @routed_ports accept' in listing
    assert "fd00:3::2 . tcp . 81" in listing  # routed: the container port, no host port
    assert "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255" in listing
    assert "iifname != \"lo\" ip6 daddr ::1 drop" in listing
    sandbox.host("nft", "delete", "table", "ip6", "nsnet")
    sandbox.host("nft", "delete", "table", "ip", "nsnet")
    sandbox.host("nft", "delete", "table", "bridge", "nsnet")


def test_driver_applies_lists_and_finds_no_drift(sandbox):
    """The driver's in-process path: apply, then drift against a rebuild in
    a throwaway namespace (the ip6 table is listed too); removing the last
    IPv6 network takes the ip6 table away."""
    nets, pubs = _world()
    host = k.open_netns(sandbox.host_path)
    try:
        driver = NftablesDriver(host)
        driver.apply(fw.full(nets, pubs))
        assert driver.drift(fw.full(nets, pubs)) == []
        assert ("table", "ip6") in driver.facts()
        # an edited IPv6 rule is drift
        sandbox.host("nft", "flush", "chain", "ip6", "nsnet", "masq")
        assert any("masq" in line for line in driver.drift(fw.full(nets, pubs)))
        driver.apply(fw.full(nets, pubs))
        plain = nets[0]
        driver.apply(fw.skeleton(ipv6=True) + fw.ports_remove(pubs))  # as the engine: first
        for i in range(len(nets) - 1, 0, -1):
            driver.apply(fw.skeleton(ipv6=True) + fw.network_remove(nets[i], nets[:i]))
        assert ("table", "ip6") not in driver.facts()
        assert driver.drift(fw.full([plain], [])) == []
        driver.apply(fw.teardown())
    finally:
        host.close()
