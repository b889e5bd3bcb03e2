#!/bin/bash
# A real dockerd on nsnet's Docker plugin (issue #19), inside a sandbox that
# test_docker.py makes with `unshare --mount --net --pid --fork --mount-proc`:
# /run is a private tmpfs (so /run/docker/plugins/nsnet.sock, /run/netns and
# containerd's shim sockets never touch the machine's), dockerd's data-root,
# exec-root, pidfile and socket live in WORKDIR, its iptables management is
# off and it has no default bridge; the image is made with `docker import`.
# Every daemon is stopped by the PID it wrote; the PID namespace is the net.
# Usage: docker.sh WORKDIR PYTHON
set -euo pipefail
T=$1 PY=$2
NSNET=("$PY" -m nsnet.cli --state-dir "$T/state" --etc-netns-dir "$T/etc-netns")
DOCKER=(/usr/bin/docker -H "unix://$T/docker.sock")  # Debian's client (docker.io)
mount -t tmpfs nsnet-docker /run
ip link set lo up
mkdir -p "$T"/{data,exec,state,etc-netns,rootfs/bin,rootfs/www}

step() { echo "--- $*"; }
fail() { echo "FAILED: $*"; exit 1; }

start_plugin() {
  "${NSNET[@]}" docker-plugin >>"$T/plugin.log" 2>&1 &
  echo $! >"$T/plugin.pid"
  for _ in $(seq 100); do grep -q "listening on" "$T/plugin.log" 2>/dev/null && break; sleep 0.1; done
  [ -S /run/docker/plugins/nsnet.sock ] || fail "the plugin did not start"
}
stop_plugin() {  # $1: signal
  local pid; pid=$(cat "$T/plugin.pid")
  kill "-$1" "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sed -i 's/listening on/listened on/' "$T/plugin.log"
}
start_dockerd() {
  dockerd --data-root "$T/data" --exec-root "$T/exec" --pidfile "$T/dockerd.pid" \
    -H "unix://$T/docker.sock" --iptables=false --ip6tables=false --bridge=none \
    --storage-driver=vfs --live-restore >>"$T/dockerd.log" 2>&1 &
  for _ in $(seq 150); do "${DOCKER[@]}" version >/dev/null 2>&1 && return; sleep 0.2; done
  fail "dockerd did not start"
}
stop_dockerd() {  # live-restore: containers keep running; containerd goes with dockerd
  local pid; pid=$(cat "$T/dockerd.pid")
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "=== plugin log"; tail -40 "$T/plugin.log" || true
    echo "=== dockerd log"; grep -v 'level=info' "$T/dockerd.log" | tail -40 || true
  fi
  if [ -f "$T/dockerd.pid" ] && kill -0 "$(cat "$T/dockerd.pid")" 2>/dev/null; then
    "${DOCKER[@]}" rm -f web client web6 client6 dflt6 >/dev/null 2>&1 || true
    stop_dockerd
  fi
  [ -f "$T/plugin.pid" ] && kill -TERM "$(cat "$T/plugin.pid")" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT
trap 'echo "FAILED at line $LINENO: $BASH_COMMAND"' ERR

ip_of() {  # container network -> address
  "${DOCKER[@]}" inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1"
}
from_outside() {
  timeout 10 ip netns exec outside busybox wget -q -O- "http://198.51.100.1:$1/index.html"
}
from_outside6() {
  timeout 10 ip netns exec outside busybox wget -q -O- "http://[2001:db8:64::1]:$1/index.html"
}
ip6_of() {  # container network -> IPv6 address
  "${DOCKER[@]}" inspect -f "{{(index .NetworkSettings.Networks \"$2\").GlobalIPv6Address}}" "$1"
}

# an "outside" namespace, as another host on a documentation network
ip netns add outside
ip link add out0 type veth peer name out1 netns outside
ip addr add 198.51.100.1/24 dev out0 && ip link set out0 up
ip -n outside addr add 198.51.100.2/24 dev out1
ip -n outside link set out1 up && ip -n outside link set lo up
ip addr add 2001:db8:64::1/64 dev out0 nodad && ip -n outside addr add 2001:db8:64::2/64 dev out1 nodad

start_plugin
start_dockerd
step "dockerd $("${DOCKER[@]}" version -f '{{.Server.Version}}'), client $("${DOCKER[@]}" version -f '{{.Client.Version}}')"

# a local image from busybox-static: no registry
cp /bin/busybox "$T/rootfs/bin/busybox"
for c in sh ping ping6 nslookup httpd wget sleep cat ip; do ln -sf busybox "$T/rootfs/bin/$c"; done
echo nsnet-ok >"$T/rootfs/www/index.html"
tar -C "$T/rootfs" -cf "$T/rootfs.tar" .
"${DOCKER[@]}" import "$T/rootfs.tar" bb:latest >/dev/null

step "docker network create -d nsnet --ipam-driver nsnet (subnet, gateway, ip-range, aux-address)"
"${DOCKER[@]}" network create -d nsnet --ipam-driver nsnet --subnet 10.90.0.0/24 \
  --gateway 10.90.0.254 --ip-range 10.90.0.128/25 --aux-address printer=10.90.0.129 \
  -o nsnet.name=dnet dnet >/dev/null
"${NSNET[@]}" network ls --json | "$PY" -c '
import json, sys
[n] = json.load(sys.stdin)
assert (n["name"], n["subnet"], n["gateway"], n["ip_range"]) == (
    "dnet", "10.90.0.0/24", "10.90.0.254", "10.90.0.128/25"), n
print("nsnet network ls: dnet 10.90.0.0/24 gw 10.90.0.254 range 10.90.0.128/25")'

step "docker run --network dnet -p 8080:80 (web) and a client"
"${DOCKER[@]}" run -d --name web --network dnet -p 8080:80 bb:latest \
  httpd -f -p 80 -h /www >/dev/null
"${DOCKER[@]}" run -d --name client --network dnet bb:latest sleep 100000 >/dev/null
WEB_IP=$(ip_of web dnet) CLIENT_IP=$(ip_of client dnet)
echo "web $WEB_IP client $CLIENT_IP"
[ "$WEB_IP" = 10.90.0.128 ] || fail "web should get the first address of the ip-range"
[ "$CLIENT_IP" = 10.90.0.130 ] || fail "client should skip the aux address 10.90.0.129"
"${DOCKER[@]}" exec client ip -o addr show eth0 | grep -q "$CLIENT_IP/24" || fail "eth0 address"
"${DOCKER[@]}" exec client ip route | grep -q "default via 10.90.0.254" || fail "default route"

step "containers ping each other by name (Docker's embedded DNS)"
"${DOCKER[@]}" exec client cat /etc/resolv.conf | grep -q 127.0.0.11 || fail "not Docker's DNS"
"${DOCKER[@]}" exec client ping -c1 -W2 web
"${DOCKER[@]}" exec web ping -c1 -W2 client >/dev/null
"${DOCKER[@]}" exec client nslookup web 127.0.0.11 | grep -q "$WEB_IP" || fail "nslookup web"
# (no -T: this busybox-static's wget segfaults with a timeout option)
"${DOCKER[@]}" exec client wget -q -O- http://web:80/index.html | grep -qx nsnet-ok

step "-p 8080:80 answers from the outside namespace"
from_outside 8080 | grep -qx nsnet-ok || fail "published port"
# (`docker port` shows nothing for any remote driver in Docker 20.10: it reads
# EndpointOperInfo's port map only when it is Go-typed; nsnet port ls reports it)
"${NSNET[@]}" port ls --json | grep -q '"host_port": 8080' || fail "nsnet port ls"

step "-p 80: an ephemeral host port, reported by nsnet port ls; --ip and --network-alias"
"${DOCKER[@]}" run -d --name eph --network dnet --ip 10.90.0.200 --network-alias eph-alias \
  -p 80 bb:latest httpd -f -p 80 -h /www >/dev/null
[ "$(ip_of eph dnet)" = 10.90.0.200 ] || fail "--ip"
# (Docker registers a fresh container's aliases in its DNS a moment after start)
for _ in $(seq 20); do
  "${DOCKER[@]}" exec client ping -c1 -W2 eph-alias 2>/dev/null | grep -q 10.90.0.200 && break
  sleep 0.5
done || true
"${DOCKER[@]}" exec client ping -c1 -W2 eph-alias | grep -q 10.90.0.200 || fail "--network-alias"
EPH=$("${NSNET[@]}" port ls --json | "$PY" -c '
import json, sys; print([p["host_port"] for p in json.load(sys.stdin) if p["port"] == 80
                         and p["host_port"] != 8080][0])')
echo "ephemeral host port $EPH"
[ -n "$EPH" ] && [ "$EPH" -gt 1024 ] || fail "no ephemeral port"
from_outside "$EPH" | grep -qx nsnet-ok || fail "ephemeral port does not answer"
"${DOCKER[@]}" rm -f eph >/dev/null

step "connect/disconnect a running container to a second nsnet network"
"${DOCKER[@]}" network create -d nsnet --ipam-driver nsnet --subnet 10.91.0.0/24 dnet2 >/dev/null
"${DOCKER[@]}" network connect dnet2 client
C2=$(ip_of client dnet2)
"${DOCKER[@]}" exec client ip -o addr show eth1 | grep -q "$C2/24" || fail "eth1 on dnet2"
"${DOCKER[@]}" exec client ping -c1 -W2 10.91.0.1 >/dev/null || fail "gateway of dnet2"
"${DOCKER[@]}" exec client ping -c1 -W2 web >/dev/null || fail "dnet still works"
"${DOCKER[@]}" network disconnect dnet2 client
"${DOCKER[@]}" exec client ip -o link | grep -q eth1 && fail "eth1 still there"
"${NSNET[@]}" network inspect "$("${NSNET[@]}" network ls --json | "$PY" -c '
import json, sys; print([n["name"] for n in json.load(sys.stdin) if n["subnet"] == "10.91.0.0/24"][0])')" \
  | grep -q '"endpoints": \[\]' || fail "the disconnected endpoint is still in nsnet"
"${DOCKER[@]}" network rm dnet2 >/dev/null
"${NSNET[@]}" reconcile --dry-run

step "dual-stack: --ipv6 --subnet 10.95.0.0/24 --subnet fd00:95::/64 (issue #16)"
"${DOCKER[@]}" network create -d nsnet --ipam-driver nsnet --ipv6 --subnet 10.95.0.0/24 \
  --subnet fd00:95::/64 -o nsnet.name=d6net d6net >/dev/null
# (Docker 20.10 shows a remote IPAM's gateways on the endpoints, not in .IPAM.Config)
"${DOCKER[@]}" network inspect -f '{{.EnableIPv6}} {{range .IPAM.Config}}{{.Subnet}};{{end}}' \
  d6net | grep -qx "true 10.95.0.0/24;fd00:95::/64;" || fail "inspect: no IPv6 subnet"
"${NSNET[@]}" network inspect d6net | grep -q '"subnet6": "fd00:95::/64"' || fail "nsnet: no subnet6"
"${DOCKER[@]}" run -d --name web6 --network d6net -p 8086:80 bb:latest \
  httpd -f -p 80 -h /www >/dev/null
"${DOCKER[@]}" run -d --name client6 --network d6net --ip6 fd00:95::66 bb:latest \
  sleep 100000 >/dev/null
W4=$(ip_of web6 d6net) W6=$(ip6_of web6 d6net) C6=$(ip6_of client6 d6net)
echo "web6 $W4 $W6 client6 $(ip_of client6 d6net) $C6"
[ "$W6" = fd00:95::2 ] && [ -n "$W4" ] || fail "web6 should have both addresses"
[ "$C6" = fd00:95::66 ] || fail "--ip6"
"${DOCKER[@]}" inspect -f '{{(index .NetworkSettings.Networks "d6net").IPv6Gateway}}' client6 \
  | grep -qx fd00:95::1 || fail "inspect: no IPv6 gateway"
"${DOCKER[@]}" exec client6 ip -o addr show eth0 | grep -q "fd00:95::66/64" || fail "eth0 v6"
"${DOCKER[@]}" exec client6 ip -6 route | grep -q "default via fd00:95::1" || fail "v6 route"
"${DOCKER[@]}" exec client6 ping6 -c1 -W2 "$W6" >/dev/null || fail "ping6 web6"
"${DOCKER[@]}" exec web6 ping6 -c1 -W2 "$C6" >/dev/null || fail "ping6 client6"
"${DOCKER[@]}" exec client6 ping6 -c1 -W2 fd00:95::1 >/dev/null || fail "ping6 the gateway"
"${DOCKER[@]}" exec client6 nslookup web6 127.0.0.11 | grep -q "$W6" || fail "AAAA for web6"
"${DOCKER[@]}" exec client6 ping6 -c1 -W2 web6 >/dev/null || fail "ping6 by name"
"${DOCKER[@]}" exec client6 wget -q -O- "http://[$W6]:80/index.html" | grep -qx nsnet-ok
from_outside 8086 | grep -qx nsnet-ok || fail "-p 8086:80 over IPv4"
from_outside6 8086 | grep -qx nsnet-ok || fail "-p 8086:80 over IPv6"
"${DOCKER[@]}" rm -f web6 client6 >/dev/null
"${DOCKER[@]}" network rm d6net >/dev/null
"${NSNET[@]}" network ls --json | grep -q d6net && fail "d6net left in nsnet"
[ -z "$(ip -6 route show fd00:95::/64)" ] || fail "fd00:95::/64 route left"

step "dual-stack with Docker's default IPAM (--ipam-driver default)"
"${DOCKER[@]}" network create -d nsnet --ipam-driver default --ipv6 --subnet 10.96.0.0/24 \
  --subnet fd00:96::/64 -o nsnet.name=dflt6 dflt6 >/dev/null
"${DOCKER[@]}" run -d --name dflt6 --network dflt6 bb:latest sleep 100000 >/dev/null
D6=$(ip6_of dflt6 dflt6)
echo "dflt6 $(ip_of dflt6 dflt6) $D6"
[ -n "$D6" ] && [ -n "$(ip_of dflt6 dflt6)" ] || fail "default IPAM: both addresses"
"${NSNET[@]}" network inspect dflt6 | grep -q "\"$D6/64\"" || fail "nsnet has not Docker's v6 address"
"${DOCKER[@]}" exec dflt6 ping6 -c1 -W2 fd00:96::1 >/dev/null || fail "ping6 the gateway"
"${DOCKER[@]}" rm -f dflt6 >/dev/null
"${DOCKER[@]}" network rm dflt6 >/dev/null
"${NSNET[@]}" reconcile --dry-run

check_survived() {
  [ "$(ip_of web dnet)" = "$WEB_IP" ] && [ "$(ip_of client dnet)" = "$CLIENT_IP" ] \
    || fail "addresses changed"
  "${DOCKER[@]}" exec client ip -o addr show eth0 | grep -q "$CLIENT_IP/24" || fail "eth0"
  "${DOCKER[@]}" exec client ping -c1 -W2 web >/dev/null || fail "ping by name"
  from_outside 8080 | grep -qx nsnet-ok || fail "published port"
  "${NSNET[@]}" reconcile --dry-run >/dev/null || fail "nsnet reconcile --dry-run not clean"
}

step "the plugin killed (SIGKILL) and restarted: containers keep working, a new one joins"
stop_plugin KILL
start_plugin
check_survived
"${DOCKER[@]}" run --rm --network dnet bb:latest ping -c1 -W2 web >/dev/null

step "dockerd restarted (live-restore): addresses and connectivity survive"
stop_dockerd
from_outside 8080 | grep -qx nsnet-ok || fail "the port went with dockerd"
start_dockerd
check_survived

step "both restarted: dockerd stopped, plugin killed, plugin then dockerd started"
stop_dockerd
stop_plugin KILL
start_plugin
start_dockerd
check_survived
echo "web $(ip_of web dnet) client $(ip_of client dnet): unchanged"

step "docker rm -f and docker network rm leave nothing in nsnet or the kernel"
"${DOCKER[@]}" rm -f web client >/dev/null
"${NSNET[@]}" network inspect dnet | grep -q '"endpoints": \[\]' || fail "endpoints left"
"${DOCKER[@]}" network rm dnet >/dev/null
[ "$("${NSNET[@]}" network ls --json)" = "[]" ] || fail "nsnet network left"
"${NSNET[@]}" ns ls --json | "$PY" -c '
import json, sys; names = [n["name"] for n in json.load(sys.stdin)]
assert names == ["outside"], f"namespace records left: {names}"'  # outside: ip netns add
[ "$("${NSNET[@]}" port ls --json)" = "[]" ] || fail "published port left"
"${NSNET[@]}" reconcile --dry-run
links=$(ip -o link | grep -Ev ': (lo|out0)[:@]' || true)
[ -z "$(ip -6 route | grep -v -e '^fe80' -e '^2001:db8:64::/64' -e '^multicast' || true)" ] \
  || fail "IPv6 routes left: $(ip -6 route)"
[ -z "$links" ] || fail "links left: $links"
nft list tables | grep -q nsnet && fail "nsnet's nft tables left"
"$PY" -c '
import json, sys
s = json.load(open(sys.argv[1]))
assert s == {"endpoints": {}, "networks": {}, "pools": {}}, s
print("plugin records: empty")' "$T/state/docker-plugin/state.json"

step "stop dockerd and the plugin by their PIDs"
stop_dockerd
stop_plugin TERM
left=$(ps -eo pid=,comm= | grep -Ev " (bash|ps|grep)$" || true)
[ -z "$left" ] || fail "processes left: $left"
[ -S /run/docker/plugins/nsnet.sock ] && fail "plugin socket left"
echo "DOCKER OK"
