"""IPv6 interface settings: quiet, immediate, and nothing automatic.

An nsnet endpoint's IPv6 address and default route come from nsnet (its
IPAM and rtnetlink requests), never from the network.  So on every
interface of an IPv6 network -- the endpoint's inside end and the bridge --
the kernel is told, *before* IPv6 is switched on there (the order matters:
switching it on starts autoconfiguration with the settings in force):

  accept_ra=0       no router advertisements taken (a rogue RA from another
                    endpoint could otherwise redirect traffic)
  autoconf=0        no SLAAC addresses from any prefix
  accept_dad=0      no duplicate address detection (its neighbour
                    solicitations, and a tentative address unusable for
                    1-2 s); nsnet's IPAM guarantees uniqueness, and the
                    addresses are added with IFA_F_NODAD as well
  addr_gen_mode=1   ("none", endpoints only) no link-local address: without
                    one the kernel sends no router solicitations and no DAD
                    for it; an endpoint's neighbour solicitations use its
                    global source address (RFC 4861 7.2.2 allows it)
  disable_ipv6=0    then IPv6 on

The gateway (the bridge) keeps its link-local address (addr_gen_mode=0,
EUI-64 of the bridge's fixed MAC, so stable): the host forwards traffic to
endpoints whose source is not a host address (published ports, routed
mode, replies), and Linux solicits a neighbour for such a packet only from
a link-local address -- without one it sends nothing and the first inbound
connection to an endpoint that has not spoken yet is lost (found by
tests/kernel/test_firewall6_wire.py).  accept_ra=0 (with forwarding on, a
router never solicits anyway) and accept_dad=0 keep that address quiet too.
A bridge must be created down and switched on after these are written, or
its link-local address is born under the namespace's defaults (with DAD).

IPv4-only networks keep IPv6 off entirely (interfaces born with it
disabled: the measured reason is in the engine's connect path), so none of
this applies to them.  Keys are paths under /proc/sys, for
:func:`nsnet.kernel.write_sysctls` / ``write_sysctls_here`` (which write in
the order given).
"""

from __future__ import annotations

__all__ = ["FORWARDING6", "ipv6_gateway_sysctls", "ipv6_interface_sysctls", "ipv6_off_sysctls"]

# The host routes between its IPv6 networks and the outside (the IPv4 twin
# is net/ipv4/ip_forward).  "all" switches every interface to router mode,
# which also stops the host itself from accepting RAs unless accept_ra=2.
FORWARDING6 = "net/ipv6/conf/all/forwarding"


def ipv6_interface_sysctls(ifname: str) -> dict[str, str]:
    """The settings of an interface of an IPv6 network, IPv6 switched on
    last (dict order is write order)."""
    conf = f"net/ipv6/conf/{ifname}"
    return {f"{conf}/accept_ra": "0", f"{conf}/autoconf": "0", f"{conf}/accept_dad": "0",
            f"{conf}/addr_gen_mode": "1", f"{conf}/disable_ipv6": "0"}


def ipv6_gateway_sysctls(bridge: str) -> dict[str, str]:
    """The settings of an IPv6 network's bridge (its gateway): as an
    endpoint's, but with a link-local address (see the module's doc)."""
    return {**ipv6_interface_sysctls(bridge), f"net/ipv6/conf/{bridge}/addr_gen_mode": "0"}


def ipv6_off_sysctls(ifname: str) -> dict[str, str]:
    """IPv6 off on an interface (what IPv4-only networks do)."""
    return {f"net/ipv6/conf/{ifname}/disable_ipv6": "1"}
