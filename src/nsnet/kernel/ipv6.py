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

A namespace nsnet creates for an IPv6 network is instead born quiet: the
same values are written once to its ``net/ipv6/conf/default`` (what a
device copies, all of it, when it is registered in the namespace:
ipv6_add_dev), before the endpoint's interface is created inside it, so
the interface is born with them and needs no write of its own
(:func:`ipv6_quiet_default_sysctls`).  Only ``lo`` predates them (a
loopback does no DAD and sends no RS).  Where ``all`` has a say it needs no
write in a new namespace: DAD runs if either ``all`` or the interface asks
(max of the two) and ``all/accept_dad`` is 0 there (as nsnet's addresses
are IFA_F_NODAD anyway); accept_ra, autoconf and addr_gen_mode are per
interface.  Interfaces made before those defaults (a namespace that
existed before the connect) get the per-interface writes.

IPv4-only networks keep IPv6 off entirely (interfaces born with it
disabled: the measured reason is in the engine's connect path), so none of
this applies to them.  Keys are paths under /proc/sys, for
:func:`nsnet.kernel.write_sysctls` / ``write_sysctls_here`` (which write in
the order given).
"""

from __future__ import annotations

__all__ = ["FORWARDING6", "ipv6_gateway_sysctls", "ipv6_interface_sysctls", "ipv6_off_sysctls",
           "ipv6_quiet_default_sysctls"]

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


def ipv6_quiet_default_sysctls() -> dict[str, str]:
    """The namespace's defaults for interfaces created in it from now on:
    quiet IPv6, on (written in a namespace being created, before its
    endpoint's interface exists)."""
    return ipv6_interface_sysctls("default")


def ipv6_gateway_sysctls(bridge: str) -> dict[str, str]:
    """The settings of an IPv6 network's bridge (its gateway): as an
    endpoint's, but with a link-local address (see the module's doc)."""
    return {**ipv6_interface_sysctls(bridge), f"net/ipv6/conf/{bridge}/addr_gen_mode": "0"}


def ipv6_off_sysctls(ifname: str) -> dict[str, str]:
    """IPv6 off on an interface (what IPv4-only networks do)."""
    return {f"net/ipv6/conf/{ifname}/disable_ipv6": "1"}
