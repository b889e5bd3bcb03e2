#!/bin/bash
# Re-captures the IPv6 rtnetlink golden files: the request iproute2's `ip`
# sends for each command below, as strace saw it (sendmsg, hex dump).  Runs
# inside a throwaway network namespace (unshare --net) on a veth pair made
# there.  Usage (root): bash tests/unit/golden/ipv6/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cases=(
  "addr_nodad:-6 addr add fd00:1::2/64 dev d0 nodad"
  "addr_nodad_doc:-6 addr add 2001:db8:5::1234/48 dev d0 nodad"
  "addr_v4:-4 addr add 10.1.0.2/24 dev d0"
  "route_default:-6 route add default via fd00:1::1 dev d0"
  "route_prefix:-6 route add 2001:db8:9::/64 via fd00:1::1 dev d0"
  "route_onlink:-6 route add 2001:db8:7::/64 dev d0"
  "route_del_default:-6 route del default"
)
for case in "${cases[@]}"; do
  name=${case%%:*}; cmd=${case#*:}
  unshare --net bash -c '
    ip link add d0 type veth peer name d1
    ip link set d0 up; ip link set d1 up
    sysctl -qw net.ipv6.conf.d0.disable_ipv6=0
    ip -6 addr add fd00:1::2/64 dev d0 nodad 2>/dev/null || true
    ip -6 route add default via fd00:1::1 dev d0 2>/dev/null || true
    ip -6 route del 2001:db8:9::/64 2>/dev/null || true
    case "'"$cmd"'" in *"addr add fd00:1::2/64"*) ip -6 addr flush dev d0;; *"route add default"*) ip -6 route del default;; esac
    strace -qq -e trace=sendmsg -e write=all -o /dev/stderr ip '"$cmd"' 2>&1 >/dev/null || true' |
  python3 -c '
import re, sys
cmd = sys.argv[1]
data = bytearray()
for line in sys.stdin:
    if re.match(r" \| [0-9a-f]{5}  ", line):  # offset, 16 bytes in two columns, ASCII
        data += bytes.fromhex("".join(line[10:58].split()))
print("# ip " + cmd)
for i in range(0, len(data), 16):
    print(data[i:i + 16].hex(" "))
' "$cmd" > "$here/$name.hex"
done
