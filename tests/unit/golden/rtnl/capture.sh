#!/bin/bash
# Re-captures the rtnetlink golden files: the request iproute2's `ip` sends
# for each command line below (the last sendmsg of the given message type),
# as strace saw it.  Runs inside a throwaway network namespace (unshare
# --net) holding a veth pair d0/d1 (d0 up, 10.1.0.2/24, a port of bridge
# brx) and a neighbour.
# Usage (root): bash tests/unit/golden/rtnl/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# name : netlink message type : ip arguments
cases=(
  "add_addr:20:addr add 10.1.0.3/24 dev d0"
  "add_route_default_via:24:route add default via 10.1.0.1"
  "add_route_default_via_dev:24:route add default via 10.1.0.1 dev d0"
  "add_route_dst_via:24:route add 10.74.0.0/24 via 10.1.0.1"
  "del_route_dst:25:route del 10.1.0.0/24"
  "set_link_up:16:link set dev d0 up"
  "set_link_down:16:link set dev d0 down"
  "set_link_alias:16:link set dev d0 alias nsnet:ep:abc"
  "set_link_group:16:link set dev d0 group 1234567"
  "del_link:17:link del dev d0"
  "del_addr:21:addr del 10.1.0.2/24 dev d0"
  "del_neigh:29:neigh del 10.1.0.9 dev d0"
  "new_bridge_up:16:link add name br0 up type bridge"
  "new_veth:16:link add name h0 type veth peer name p0"
  "del_group:17:link del group 1234567"
  "new_veth_peer_in_netns:16:link add name h0 type veth peer name p0 netns /proc/self/ns/net"
  "new_veth_up_peer_in_netns:16:link add name h0 up type veth peer name p0 netns /proc/self/ns/net"
  "set_hairpin:16:link set dev d0 type bridge_slave hairpin on"
  "bridge_mcast_snooping_off:16:link set dev brx type bridge mcast_snooping 0"
)
# new_nsid (type 88, "netns set x 1073741824") needs a named namespace: captured
# by hand with `unshare --mount --net` + tmpfs on /run + `ip netns add x`
for case in "${cases[@]}"; do
  IFS=: read -r name mtype args <<<"$case"
  unshare --net bash -c '
    ip link add d0 type veth peer name d1
    ip link set d0 up; ip link set d1 up
    ip addr add 10.1.0.2/24 dev d0
    ip neigh add 10.1.0.9 lladdr 02:00:00:00:00:09 dev d0 nud stale
    ip link set d0 group 1234567
    ip link add brx type bridge; ip link set d0 master brx
    strace -qq -e trace=sendmsg -e write=all -o /dev/stderr ip '"$args"' 2>&1 >/dev/null || true' |
  python3 -I "$here/../strace_hex.py" "$mtype" "# ip $args" > "$here/$name.hex"
done
