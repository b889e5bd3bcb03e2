"""network rm of a big network: the doomed bridge's multicast snooping goes
off before its ports are deleted (cheaper for the kernel), only for the
bridge that carries the network's mark, and only through a driver that has
the hook."""

from __future__ import annotations

from types import SimpleNamespace

from nsnet.engine.networks import BridgeDriver, Networks
from nsnet.kernel import Link
from nsnet.kernel import netlink as nl
from nsnet.kernel.rtnl import IFLA_BR_MCAST_SNOOPING
from nsnet.model import bridge_alias


class FakeRtnl:
    def __init__(self, links: dict[str, Link]) -> None:
        self.links, self.sent = links, []

    def find_link(self, name="", index=0):
        return self.links.get(name)

    def batch(self, requests):
        self.sent += requests


def _bridge(alias: str, kind: str = "bridge") -> Link:
    return Link(7, "br-x", kind, 1, 1500, 0, "", alias, 0, None)


def test_snooping_goes_off_on_our_bridge_only():
    ours = FakeRtnl({"br-x": _bridge(bridge_alias("id1"))})
    BridgeDriver(SimpleNamespace(rtnl=ours)).quiesce("id1", "br-x")  # type: ignore[arg-type]
    (req,) = ours.sent
    assert req.msg_type == nl.RTM_NEWLINK and nl.IFINFO.unpack_from(req.body)[2] == 7
    info = nl.parse_attrs(nl.parse_attrs(req.body, nl.IFINFO.size)[nl.IFLA_LINKINFO])
    assert nl.cstr(info[nl.IFLA_INFO_KIND]) == "bridge"
    assert nl.parse_attrs(info[nl.IFLA_INFO_DATA]) == {IFLA_BR_MCAST_SNOOPING: b"\0"}
    for links in ({"br-x": _bridge("someone else's")}, {"br-x": _bridge(bridge_alias("id1"),
                                                                        "veth")}, {}):
        theirs = FakeRtnl(links)
        BridgeDriver(SimpleNamespace(rtnl=theirs)).quiesce("id1", "br-x")  # type: ignore[arg-type]
        assert theirs.sent == []


def test_a_driver_without_the_hook_is_left_alone():
    nets = Networks(SimpleNamespace(rtnl=FakeRtnl({})))  # type: ignore[arg-type]
    nets.drivers["plain"] = SimpleNamespace()  # type: ignore[assignment]
    nets.quiesce("id1", "br-x", "plain")  # no hook: nothing to do, no error
    nets.quiesce("id1", "br-x", "gone")  # no such driver: left to the teardown to refuse
