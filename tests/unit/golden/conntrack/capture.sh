#!/bin/bash
# Re-captures the conntrack golden file: the IPCTNL_MSG_CT_DELETE request
# conntrack-tools' `conntrack -D` sends for one UDP entry, as strace saw it.
# Runs inside a throwaway network namespace (unshare --net) where an nft
# rule turns conntrack on and one datagram 127.0.0.1:40000 -> :5353 makes
# the entry.  Usage (root; apt install conntrack strace):
#   bash tests/unit/golden/conntrack/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
args="-D -p udp --orig-dst 127.0.0.1 --dport 5353"
unshare --net bash -c '
  ip link set lo up
  nft add table ip t
  nft "add chain ip t c { type filter hook output priority 0; }"
  nft add rule ip t c ct state new accept
  python3 -I -c "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((\"127.0.0.1\", 40000)); s.sendto(b\"x\", (\"127.0.0.1\", 5353))"
  strace -qq -e trace=sendto -e write=all -o /dev/stderr conntrack '"$args"' 2>&1 >/dev/null || true' |
python3 -I "$here/../strace_hex.py" 0x102 "# conntrack $args" > "$here/ct_delete_udp.hex"
