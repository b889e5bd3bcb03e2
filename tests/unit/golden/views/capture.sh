#!/bin/bash
# Re-captures the golden read requests of kernel/views.py: the first request
# of the given netlink message type that iproute2's `ip` sends for each
# command line below (sendmsg or sendto, cut to the message's nlmsg_len), as
# strace saw it.  Runs inside a throwaway network namespace (unshare --net)
# holding a veth pair d0/d1 (d0 is ifindex 3).
# Usage (root): bash tests/unit/golden/views/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# name : netlink message type : ip arguments
cases=(
  "dump_addresses4:22:-4 addr show dev d0"
  "dump_addresses6:22:-6 addr show dev d0"
  "dump_routes4:26:-4 route show table main"
  "dump_routes6:26:-6 route show table main"
)
for case in "${cases[@]}"; do
  IFS=: read -r name mtype args <<<"$case"
  unshare --net bash -c '
    ip link add d0 type veth peer name d1
    ip link set d0 up; ip addr add 10.1.0.2/24 dev d0
    strace -qq -e trace=sendmsg,sendto -e write=all -o /dev/stderr ip '"$args"' 2>&1 >/dev/null || true' |
  python3 -c '
import re, struct, sys
args, mtype = sys.argv[1], int(sys.argv[2])
buffers, cur = [], None
for line in sys.stdin:
    if line.startswith(("sendmsg(", "sendto(")):
        cur = bytearray(); buffers.append(cur)
    elif re.match(r" \| [0-9a-f]{5}  ", line) and cur is not None:
        cur += bytes.fromhex("".join(line[10:58].split()))
msgs = [b for b in buffers if len(b) >= 16 and struct.unpack_from("=H", b, 4)[0] == mtype]
data = msgs[0][:struct.unpack_from("=I", msgs[0])[0]]
print("# ip " + args)
for i in range(0, len(data), 16):
    print(data[i:i + 16].hex(" "))
' "$args" "$mtype" > "$here/$name.hex"
done
