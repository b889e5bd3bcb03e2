#!/bin/bash
# Re-captures the VXLAN golden files: the last netlink request iproute2 sends
# for each command below (the RTM_NEWLINK / RTM_NEWNEIGH / RTM_DELNEIGH; `ip`
# and `bridge` first look the device up with RTM_GETLINK, not kept), as strace
# saw it (sendmsg, hex dump).  Runs inside a throwaway network namespace
# (unshare --net) where u0 (underlay) and vx0 (made by the first command)
# exist.  Usage (root): bash tests/unit/golden/vxlan/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MAC=02:42:0a:c8:00:05
cases=(
  "link_add:ip link add vx0 mtu 1450 type vxlan id 42 local 198.51.100.11 dev u0 dstport 4789 nolearning proxy"
  "link_add_master:ip link add vx0 mtu 1450 master br0 type vxlan id 42 local 198.51.100.11 dev u0 dstport 4789 nolearning proxy"
  "fdb_append:bridge fdb append $MAC dev vx0 dst 198.51.100.12 self permanent"
  "fdb_del:bridge fdb del $MAC dev vx0 dst 198.51.100.12 self"
  "neigh_replace:ip neigh replace 10.200.0.5 lladdr $MAC dev vx0 nud permanent"
  "neigh_del:ip neigh del 10.200.0.5 dev vx0"
)
for case in "${cases[@]}"; do
  name=${case%%:*}; cmd=${case#*:}
  unshare --net bash -c '
    ip link add u0 type veth peer name u1
    ip link add br0 type bridge
    ip link add vx0 mtu 1450 type vxlan id 42 local 198.51.100.11 dev u0 dstport 4789 nolearning proxy 2>/dev/null || true
    bridge fdb append '"$MAC"' dev vx0 dst 198.51.100.12 self permanent
    ip neigh replace 10.200.0.5 lladdr '"$MAC"' dev vx0 nud permanent
    case "'"$name"'" in link_add*) ip link del vx0;; esac
    strace -qq -e trace=sendmsg -e write=all -o /dev/stderr '"$cmd"' 2>&1 >/dev/null || true' |
  python3 -c '
import re, sys
cmd = sys.argv[1]
data = bytearray()
for line in sys.stdin:
    if line.startswith("sendmsg("):
        data = bytearray()  # keep the last request only
    if re.match(r" \| [0-9a-f]{5}  ", line):  # offset, 16 bytes in two columns, ASCII
        data += bytes.fromhex("".join(line[10:58].split()))
print("# " + cmd)
for i in range(0, len(data), 16):
    print(data[i:i + 16].hex(" "))
' "$cmd" > "$here/$name.hex"
done
