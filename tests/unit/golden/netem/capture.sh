#!/bin/bash
# Re-captures the netem golden files: the RTM_NEWQDISC request iproute2's tc
# sends for each command line below, as strace saw it (sendmsg, hex dump).
# Runs tc inside a throwaway network namespace (unshare --net) on a veth pair
# made there; a kernel without netem refuses the request, but the bytes are
# already sent.  Usage (root): bash tests/unit/golden/netem/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cases=(
  "delay_jitter_corr_normal_loss_rate:delay 50ms 10ms 25% distribution normal loss 1% rate 10mbit"
  "delay:delay 100ms"
  "delay_jitter:delay 20ms 5ms"
  "loss:loss 5%"
  "loss_corr:loss 1% 25%"
  "rate:rate 100kbit"
  "rate64:rate 40gbit"
  "delay_jitter_pareto:delay 30ms 3ms distribution pareto"
  "delay_jitter_corr_paretonormal_loss_corr:delay 80ms 20ms 50% distribution paretonormal loss 0.5% 10%"
)
for case in "${cases[@]}"; do
  name=${case%%:*}; opts=${case#*:}
  unshare --net bash -c '
    ip link add d0 type veth peer name d1
    strace -qq -e trace=sendmsg -e write=all -o /dev/stderr tc qdisc add dev d0 root netem '"$opts"' 2>&1 >/dev/null || true' |
  python3 -c '
import re, sys
opts = sys.argv[1]
data = bytearray()
for line in sys.stdin:
    if re.match(r" \| [0-9a-f]{5}  ", line):  # offset, 16 bytes in two columns, ASCII
        data += bytes.fromhex("".join(line[10:58].split()))
print("# tc qdisc add dev d0 root netem " + opts)
for i in range(0, len(data), 16):
    print(data[i:i + 16].hex(" "))
' "$opts" > "$here/$name.hex"
done
