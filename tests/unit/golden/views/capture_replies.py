"""Re-captures the kernel's answers to kernel/views.py's questions, for the
unit tests of InsideReader's decoding (real kernel bytes, not our encoder's).

Run as root from the repository:
    unshare --net python3 tests/unit/golden/views/capture_replies.py
It builds, in that throwaway namespace, an endpoint's inside: eth0 (a veth,
up) with 10.1.0.2/24 and fd00:1::2/64, default routes via 10.1.0.1 and
fd00:1::1, plus a second IPv4 address on lo and a static route that are not
the endpoint's; then records the link's ioctl answers (flags, index) and
what each dump request returns, recv by recv, into replies.json.
"""

import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "src"))
from nsnet.kernel import views
from nsnet.kernel.rtnl import req_dump_addresses, req_dump_routes

SETUP = """link set lo up
link add eth0 type veth peer name d1
link set eth0 up
link set d1 up
addr add 10.1.0.2/24 dev eth0
addr add 127.0.0.9/8 dev lo
route add default via 10.1.0.1
route add 198.51.100.0/24 via 10.1.0.7
-6 addr add fd00:1::2/64 dev eth0 nodad
-6 route add default via fd00:1::1 dev eth0"""


def exchange(sock: socket.socket, frame: bytes) -> list[str]:
    """Send one dump request; every recv up to its NLMSG_DONE (hex strings)."""
    sock.send(frame)
    out = []
    while True:
        data = sock.recv(1 << 16)
        out.append(data.hex())
        offset = 0
        while offset < len(data):
            length, mtype, _f, _seq, _p = views._HDR.unpack_from(data, offset)
            if mtype == 3:
                return out
            offset += (length + 3) & ~3


def capture(family: int, ifname: str, strict: bool) -> dict:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    if strict:
        sock.setsockopt(270, views.NETLINK_GET_STRICT_CHK, 1)
    found = views.flags_and_index(sock, ifname)
    sends = []
    if found:
        sends.append(exchange(sock, views.frame(req_dump_addresses(family, found[1]),
                                                views._DUMP_ADDRESSES)))
        sends.append(exchange(sock, views.frame(req_dump_routes(family), views._DUMP_ROUTES)))
    return {"family": family, "ifname": ifname, "strict": strict, "link": found,
            "sends": sends}


for line in SETUP.splitlines():
    subprocess.run(["ip", *line.split()], check=True)
out = {"setup": SETUP.splitlines(), "uname": os.uname().release,
       "v4": capture(socket.AF_INET, "eth0", True),
       "v4_not_strict": capture(socket.AF_INET, "eth0", False),
       "v6": capture(socket.AF_INET6, "eth0", True),
       "missing": capture(socket.AF_INET, "eth9", True)}
with open(os.path.join(os.path.dirname(__file__), "replies.json"), "w") as f:
    json.dump(out, f, indent=1)
