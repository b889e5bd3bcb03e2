#!/bin/bash
# Re-captures the tc golden files: the request iproute2's `tc` sends for each
# command line below (the last sendmsg of the given netlink message type), as
# strace saw it.  Runs inside a throwaway network namespace (unshare --net)
# holding a veth pair d0/d1 (d0 is ifindex 3); the filter case adds the
# clsact qdisc first, the delete case a tbf qdisc.
# Usage (root): bash tests/unit/golden/tc/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
guard="9,32 0 0 4294963220,69 6 0 16384,40 0 0 12,21 0 4 2048,32 0 0 30,84 0 0 4278190080,21 0 1 2130706432,6 0 0 2,6 0 0 4294967295"
# name | netlink message type | set-up tc arguments (or -) | tc arguments
cases=(
  "tbf|36|-|qdisc replace dev d0 root handle 1: tbf rate 10000000bit burst 12500 limit 75000"
  "del_root_qdisc|37|qdisc add dev d0 root handle 1: tbf rate 1mbit burst 3200 limit 9450|qdisc del dev d0 root"
  "clsact|36|-|qdisc add dev d0 clsact"
  "loopback_guard|44|qdisc add dev d0 clsact|filter add dev d0 ingress pref 1 handle 1 protocol all bpf direct-action bytecode \"$guard\""
)
for case in "${cases[@]}"; do
  IFS='|' read -r name mtype setup args <<<"$case"
  [ "$setup" = "-" ] && setup=""
  unshare --net bash -c '
    ip link add d0 type veth peer name d1
    [ -z "$1" ] || eval "tc $1"
    eval "strace -qq -e trace=sendmsg -e write=all -o /dev/stderr tc $2" 2>&1 >/dev/null || true
  ' _ "$setup" "$args" |
  python3 -I "$here/../strace_hex.py" "$mtype" "# tc $args" > "$here/$name.hex"
done
