#!/bin/bash
# A real runtime on nsnet's CNI plugin: podman (CNI backend) + runc, inside a
# sandbox that test_podman.py makes with `unshare --mount --net` (so the
# machine's own namespace, /run and podman state are never touched).
# Usage: podman.sh WORKDIR PYTHON
set -euo pipefail
T=$1 PY=$2
NSNET=("$PY" -m nsnet.cli --state-dir "$T/state" --etc-netns-dir "$T/etc-netns")
mount -t tmpfs nsnet-podman /run
# podman's libcni caches results in /var/lib/cni, its image library blob
# metadata in /var/lib/containers/cache: the sandbox's own, not the machine's
"$PY" "$(dirname "$0")/sandboxfs.py" "$T" /var/lib/cni /var/lib/containers
ip link set lo up
mkdir -p "$T"/{net.d,cni-bin,graph,runroot,etc-netns,state,rootfs/bin,rootfs/www}
cat > "$T/containers.conf" <<C
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$T/cni-bin", "/usr/lib/cni"]
network_config_dir = "$T/net.d"
C
cat > "$T/storage.conf" <<C
[storage]
driver = "vfs"
runroot = "$T/runroot"
graphroot = "$T/graph"
C
export CONTAINERS_CONF=$T/containers.conf CONTAINERS_STORAGE_CONF=$T/storage.conf
cleanup() { podman rm -fa -t 0 >/dev/null 2>&1 || true; }
trap cleanup EXIT

"${NSNET[@]}" cni install --dir "$T/cni-bin"
cat > "$T/net.d/nsnettest.conflist" <<C
{"cniVersion": "1.0.0", "name": "nsnettest", "plugins": [
  {"type": "nsnet", "ipam": {"ranges": [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd00:89::/64"}]]},
   "stateDir": "$T/state",
   "etcNetnsDir": "$T/etc-netns", "capabilities": {"portMappings": true, "aliases": true}}]}
C
# a local image from busybox-static: no registry
cp /bin/busybox "$T/rootfs/bin/busybox"
for c in sh ping nslookup httpd wget sleep cat ip; do ln -sf busybox "$T/rootfs/bin/$c"; done
echo nsnet-ok > "$T/rootfs/www/index.html"
tar -C "$T/rootfs" -cf "$T/rootfs.tar" .
podman import -q "$T/rootfs.tar" localhost/bb:latest >/dev/null

step() { echo "--- $*"; }
step "podman run --network nsnettest -p 8080:80 (web)"
podman run -d --name web --network nsnettest -p 8080:80 localhost/bb:latest \
  httpd -f -p 80 -h /www >/dev/null
step "a second container pings and resolves the first by name"
podman run -d --name client --network nsnettest localhost/bb:latest sleep 300 >/dev/null
# (-4: on this dual-stack network busybox would otherwise pick web's AAAA;
# the IPv6 path has its own step below)
web_ip=$(podman inspect -f '{{.NetworkSettings.Networks.nsnettest.IPAddress}}' web)
podman exec client sh -c "ping -4 -c1 -W2 web && nslookup web 10.89.0.1 && wget -q -O- http://web/ && wget -q -O- http://$web_ip/"
step "and the first resolves and pings the second (both directions)"
client_ip=$(podman inspect -f '{{.NetworkSettings.Networks.nsnettest.IPAddress}}' client)
podman exec web sh -c "nslookup client 10.89.0.1" | tee "$T/reverse.txt"
grep -q "Address: $client_ip" "$T/reverse.txt" || { echo "web resolved client to something else than $client_ip"; exit 1; }
podman exec web ping -4 -c1 -W2 client
step "dual-stack (#16): over IPv6 too, by name (AAAA) and by address"
web_ip6=$(podman inspect -f '{{.NetworkSettings.Networks.nsnettest.GlobalIPv6Address}}' web)
case "$web_ip6" in fd00:89::*) ;; *) echo "web has no IPv6 address from the result: '$web_ip6'"; exit 1;; esac
podman exec web ip -6 addr show dev eth0 | grep -q "inet6 $web_ip6/64" || { echo "web's eth0 lacks $web_ip6"; exit 1; }
podman exec web ip -6 route | grep -q "default via fd00:89::1" || { echo "web has no ::/0 route"; exit 1; }
podman exec client sh -c "nslookup -type=aaaa web fd00:89::1" | tee "$T/aaaa.txt"
grep -q "Address: $web_ip6" "$T/aaaa.txt" || { echo "web's AAAA is not $web_ip6"; exit 1; }
podman exec client sh -c "ping -6 -c1 -W2 web && wget -q -O- http://[$web_ip6]/" | grep -x nsnet-ok
podman rm -f -t 0 client >/dev/null
step "the published port from the host, over both families"
"$PY" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/', timeout=5).read().decode().strip())" | grep -x nsnet-ok
# the sandbox host's own IPv6 address (a documentation one, on a veth pair
# of the sandbox: no dummy driver is needed)
ip link add nsup6 type veth peer name nsout6
ip addr add 2001:db8::1/64 dev nsup6 nodad
ip link set nsup6 up
ip link set nsout6 up
"$PY" -c "import urllib.request as u; print(u.urlopen('http://[2001:db8::1]:8080/', timeout=5).read().decode().strip())" | grep -x nsnet-ok
"${NSNET[@]}" network inspect nsnettest | grep -q '"web"'
ip link del nsup6
step "podman rm leaves nothing"
podman rm -f -t 0 web >/dev/null
"${NSNET[@]}" reconcile --dry-run
"${NSNET[@]}" network inspect nsnettest | "$PY" -c 'import json,sys; n=json.load(sys.stdin)[0]; assert n["endpoints"] == [], n; print("no endpoints left")'
if ip -o link | grep -q veth; then echo "veth left behind"; exit 1; fi
if [ -n "$(ls -A /var/lib/cni/results 2>/dev/null)" ]; then echo "libcni cache left: $(ls /var/lib/cni/results)"; exit 1; fi
"${NSNET[@]}" port ls | grep -q 8080 && { echo "published port left behind"; exit 1; }
echo "RUNTIME OK"
