"""DNS helpers run inside namespaces: a fake upstream server and a raw client.

    python3 dnstools.py upstream IP            answers NAME.test A 203.0.113.7
    python3 dnstools.py ask SERVER NAME [TYPE] [tcp]   prints rcode and answers
"""

from __future__ import annotations

import socket
import sys
import time

from dnslib import QTYPE, RCODE, RR, A, DNSRecord


def upstream(ip: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, 53))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        query = DNSRecord.parse(data)
        reply = query.reply()
        if str(query.q.qname).endswith(".test."):
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("203.0.113.7"), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        sock.sendto(reply.pack(), peer)


def ask(server: str, name: str, qtype: str = "A", tcp: bool = False) -> str:
    q = DNSRecord.question(name, qtype)
    t0 = time.monotonic()
    try:
        raw = q.send(server, 53, tcp=tcp, timeout=5)
    except OSError as exc:
        return f"ERROR {exc} {time.monotonic() - t0:.2f}s"
    r = DNSRecord.parse(raw)
    answers = " ".join(sorted(str(rr.rdata) for rr in r.rr))
    return f"{RCODE.get(r.header.rcode)} {answers} {time.monotonic() - t0:.2f}s"


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        upstream(sys.argv[2])
    else:
        print(ask(sys.argv[2], sys.argv[3], *(sys.argv[4:5] or ["A"]),
                  tcp=sys.argv[5:6] == ["tcp"]))
