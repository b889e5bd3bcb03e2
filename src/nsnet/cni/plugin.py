"""CNI commands on top of the engine: ADD, DEL, CHECK, STATUS, GC.

Attachments (container id + interface name, per network) are recorded in the
state store, so DEL works with the namespace gone or ``CNI_NETNS`` empty and
GC knows what exists.  A namespace outside the engine's netns directory (e.g.
``/proc/PID/ns/net``) is bind-mounted into it for the attachment's lifetime.
Errors are the spec's JSON on stdout with a non-zero exit; logs go to stderr
(or ``logFile``), never stdout.

As the reference plugins' ``skel.CmdArgs``, an execution is parsed at the
edge: :func:`handle` is a function of (command, environment, stdin bytes,
log stream) and returns the exit code and the stdout text.  Nothing below it
reads ``os.environ`` or ``sys.std*``, so the agent serves each client with
the client's own environment without touching process globals.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from .. import kernel as k
from ..config import DEFAULT_ETC_NETNS_DIR, DEFAULT_NETNS_DIR, DEFAULT_STATE_DIR, Config
from ..crash import crashpoint
from ..engine import Engine
from ..errors import (
    AlreadyExists,
    InvalidInput,
    LockTimeout,
    NotFound,
    NsnetError,
    PermissionDenied,
    StateError,
)
from ..ipam import Pool
from ..model import (
    ConnectOptions,
    Network,
    NetworkSpec,
    parse_ports,
    validate_dns_name,
    validate_ifname,
)
from . import SUPPORTED

# the spec's well-known error codes
INCOMPATIBLE, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, INVALID_ENV = 1, 2, 3, 4
IO_FAILURE, DECODE, INVALID_CONFIG, TRY_AGAIN = 5, 6, 7, 11
NOT_AVAILABLE = 50
PLUGIN_ERROR = 100  # nsnet's own failures (the message says which)
DELEGATE_WAIT = 60.0  # a delegated IPAM plugin's answer (the agent serves others too)

KNOWN_KEYS = {"cniVersion", "cniVersions", "name", "type", "args", "ipMasq", "ipam", "dns",
              "prevResult", "runtimeConfig", "capabilities", "bridge", "subnet", "gateway",
              "ipRange", "mtu", "masquerade", "internal", "icc", "isolation", "dnsServers",
              "stateDir", "netnsDir", "etcNetnsDir", "hostNetns", "logFile", "isGateway",
              "isDefaultGateway", "cni.dev/valid-attachments", "cni.dev/attachments",
              "disableCheck", "driver"}  # driver: "bridge" or "overlay" (#17)
BOOL_KEYS = ("ipMasq", "masquerade", "internal", "icc", "isolation", "isGateway",
             "isDefaultGateway")


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


class Log:
    """Where one execution's log lines go: the given stream, or the
    configuration's ``logFile`` once it is known."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._file: TextIO | None = None

    def __call__(self, msg: str) -> None:
        print(msg, file=self._file or self.stream, flush=True)

    def to(self, path: str | None) -> None:
        if path:
            with contextlib.suppress(OSError):
                self._file = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        if self._file:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


@dataclass
class Request:
    command: str
    conf: dict[str, Any]
    version: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    log: Any = field(default=None, repr=False)  # Log: one execution's

    @property
    def network(self) -> str:
        return str(self.conf["name"])


# ------------------------------------------------------------------ input
def _vtuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


def decode_config(text: str) -> dict[str, Any]:
    try:
        conf = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise CniError(DECODE, "cannot decode the network configuration on stdin",
                       str(exc)[:200]) from None
    if not isinstance(conf, dict):
        raise CniError(DECODE, "the network configuration must be a JSON object")
    return conf


def reply_version(conf: dict[str, Any]) -> str:
    """The version to answer in (errors too): the request's, if nsnet speaks it."""
    version = conf.get("cniVersion")
    return version if isinstance(version, str) and version in SUPPORTED else "1.1.0"


def read_request(command: str, conf: dict[str, Any], env: Mapping[str, str],
                 log: Log | None = None) -> Request:
    if command not in ("ADD", "DEL", "CHECK", "STATUS", "GC"):
        raise CniError(INVALID_ENV, f"CNI_COMMAND {command!r} is not one of ADD, DEL, CHECK, "
                       "STATUS, GC, VERSION", "CNI_COMMAND")
    _check_agent_env(env)
    version = str(conf.get("cniVersion", ""))
    if version not in SUPPORTED:
        raise CniError(INCOMPATIBLE, f"incompatible CNI version {version!r}",
                       f"nsnet supports {', '.join(SUPPORTED)}")
    if command == "CHECK" and _vtuple(version) < (0, 4, 0):
        raise CniError(INCOMPATIBLE, f"CHECK needs CNI 0.4.0 or later, not {version}")
    if command in ("STATUS", "GC") and _vtuple(version) < (1, 1, 0):
        raise CniError(INCOMPATIBLE, f"{command} needs CNI 1.1.0, not {version}")
    _check_fields(conf)
    check_types(conf, command)
    cni = _env(command, env)
    return Request(command, conf, version, cni["CNI_CONTAINERID"], cni["CNI_NETNS"],
                   cni["CNI_IFNAME"], _cni_args(env.get("CNI_ARGS", "")), env,
                   log or Log(sys.stderr))


def _check_fields(conf: dict[str, Any]) -> None:
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "the network configuration has no 'name'")
    for key, value in conf.items():
        if key not in KNOWN_KEYS:
            raise CniError(UNSUPPORTED_FIELD, f"unsupported field {key!r}",
                           f"{key}={json.dumps(value)[:80]}")
    for key in BOOL_KEYS:
        if key in conf and not isinstance(conf[key], bool):
            raise CniError(UNSUPPORTED_FIELD, f"field {key!r} must be true or false",
                           f"{key}={json.dumps(conf[key])[:80]}")


def _check_agent_env(env: Mapping[str, str]) -> None:
    text = env.get("NSNET_CNI_AGENT_IDLE")
    if text is None:
        return
    try:
        ok = 0 < float(text) < 86400
    except ValueError:
        ok = False
    if not ok:
        raise CniError(INVALID_ENV, f"NSNET_CNI_AGENT_IDLE={text[:40]!r} is not a number of "
                       "seconds (0 < s < 86400)", "NSNET_CNI_AGENT_IDLE")


# ------------------------------------------------------------ field types
def _bad(key: str, value: Any, want: str) -> CniError:
    return CniError(INVALID_CONFIG, f"field {key!r} must be {want}",
                    f"{key}={json.dumps(value)[:80]}")


def _want(conf: dict[str, Any], key: str, kind: type | tuple[type, ...], want: str,
          where: str = "") -> Any:
    value = conf.get(key)
    if key in conf and (not isinstance(value, kind) or isinstance(value, bool)):
        raise _bad(where + key, value, want)
    return value


def plugin_name(kind: Any, key: str) -> str:
    """A delegate plugin is a plain file name, looked up in CNI_PATH only."""
    if not isinstance(kind, str) or kind in ("", ".", "..") or "/" in kind or "\0" in kind:
        raise _bad(key, kind, "a plugin name (a file name in CNI_PATH, no '/')")
    return kind


def check_types(conf: dict[str, Any], command: str) -> None:
    """Every value nsnet reads has the JSON type it needs: a wrong one is
    error 7 (or 2 for the spec's plain flags) here, never a traceback later."""
    for key in ("bridge", "subnet", "gateway", "ipRange", "logFile", "stateDir", "netnsDir",
                "etcNetnsDir", "hostNetns"):
        _want(conf, key, str, "a string")
    if "mtu" in conf and (isinstance(conf["mtu"], bool) or not isinstance(conf["mtu"], int)):
        raise CniError(UNSUPPORTED_FIELD, "field 'mtu' must be a number",
                       f"mtu={json.dumps(conf['mtu'])[:80]}")
    for key in ("args", "capabilities", "prevResult", "runtimeConfig"):
        _want(conf, key, dict, "an object")
    if not isinstance(conf.get("dns", True), (bool, dict)):
        raise _bad("dns", conf["dns"], "true, false or an object")
    servers = _want(conf, "dnsServers", list, "a list of IPv4 addresses") or []
    for server in servers:
        if not isinstance(server, str):
            raise _bad("dnsServers", servers, "a list of IPv4 addresses (strings)")
        try:
            ipaddress.IPv4Address(server)
        except ValueError:
            raise _bad("dnsServers", servers, "a list of IPv4 addresses") from None
    _check_ipam_types(conf)
    _check_runtime_config(conf)
    if command == "GC":
        valid = _want(conf, "cni.dev/valid-attachments", list, "a list of objects") or []
        for item in valid:
            if not isinstance(item, dict) or not all(
                    isinstance(item.get(k), str) for k in ("containerID", "ifname")):
                raise _bad("cni.dev/valid-attachments", item,
                           "a list of {containerID, ifname} objects")


def _check_ipam_types(conf: dict[str, Any]) -> None:
    ipam = _want(conf, "ipam", dict, "an object")
    if not ipam:
        return
    if "type" in ipam and ipam["type"] not in ("", "nsnet"):
        plugin_name(ipam["type"], "ipam.type")
    for key in ("subnet", "gateway"):
        _want(ipam, key, str, "a string", "ipam.")
    ranges = _want(ipam, "ranges", list, "a list of range sets", "ipam.") or []
    for rset in ranges:
        if not isinstance(rset, list) or not all(isinstance(r, dict) for r in rset):
            raise _bad("ipam.ranges", ranges, "a list of lists of {subnet, gateway} objects")
        for r in rset:
            for key in ("subnet", "gateway"):
                _want(r, key, str, "a string", "ipam.ranges.")


def _check_runtime_config(conf: dict[str, Any]) -> None:
    rc = conf.get("runtimeConfig") or {}
    ips = _want(rc, "ips", list, "a list of addresses", "runtimeConfig.") or []
    if not all(isinstance(ip, str) for ip in ips):
        raise _bad("runtimeConfig.ips", ips, "a list of addresses (strings)")
    _want(rc, "mac", str, "a string", "runtimeConfig.")
    aliases = _want(rc, "aliases", dict, "an object", "runtimeConfig.") or {}
    for value in aliases.values():
        if not isinstance(value, list):
            raise _bad("runtimeConfig.aliases", aliases, "an object of name lists")
    maps = _want(rc, "portMappings", list, "a list of mappings", "runtimeConfig.") or []
    for m in maps:
        if not (isinstance(m, dict) and all(
                isinstance(m.get(k), int) and not isinstance(m.get(k), bool)
                for k in ("hostPort", "containerPort"))
                and isinstance(m.get("protocol", "tcp"), str)
                and isinstance(m.get("hostIP", ""), str)):
            raise _bad("runtimeConfig.portMappings", m,
                       "a list of {hostPort, containerPort, protocol, hostIP} "
                       "(ports as numbers)")


def _env(command: str, environ: Mapping[str, str]) -> dict[str, str]:
    need = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
            "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
            "DEL": ("CNI_CONTAINERID", "CNI_IFNAME")}.get(command, ())
    env = {v: environ.get(v, "") for v in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")}
    for var in need:
        if not env[var]:
            raise CniError(INVALID_ENV, f"{var} is not set", var)
    if env["CNI_IFNAME"]:
        try:
            validate_ifname(env["CNI_IFNAME"])
        except InvalidInput as exc:
            raise CniError(INVALID_ENV, f"CNI_IFNAME: {exc}", "CNI_IFNAME") from None
    return env


def _cni_args(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise CniError(INVALID_ENV, f"CNI_ARGS item {item!r} is not KEY=VALUE", "CNI_ARGS")
        out[key] = value
    return out


# ----------------------------------------------------------------- engine
def engine_for(req: Request) -> Engine:
    """The engine the configuration (then the request's NSNET_* variables) names."""
    conf, env = req.conf, req.env

    def setting(key: str, var: str, default: str | None) -> str | None:
        return conf.get(key) or env.get(var) or default

    config = Config.from_env(env).override(
        host_netns=setting("hostNetns", "NSNET_HOST_NETNS", None),
        state_dir=setting("stateDir", "NSNET_STATE_DIR", DEFAULT_STATE_DIR) or "",
        netns_dir=setting("netnsDir", "NSNET_NETNS_DIR", DEFAULT_NETNS_DIR) or "",
        etc_netns_dir=setting("etcNetnsDir", "NSNET_ETC_NETNS_DIR", DEFAULT_ETC_NETNS_DIR)
        or "")
    return Engine.open(notify=req.log, config=config)


def _subnets(conf: dict[str, Any]) -> dict[int, tuple[str, str | None]]:
    """(subnet, gateway) per address family: ``subnet``/``ipam.subnet``, then
    the first range of each ``ipam.ranges`` set (host-local's form: one range
    set per family makes a dual-stack network); the first of a family wins."""
    ipam = conf.get("ipam") or {}
    found = [(conf.get("subnet") or ipam.get("subnet"),
              conf.get("gateway") or ipam.get("gateway"))]
    found += [(rs[0].get("subnet"), rs[0].get("gateway", found[0][1] if i == 0 else None))
              for i, rs in enumerate(ipam.get("ranges") or []) if rs]
    out: dict[int, tuple[str, str | None]] = {}
    for subnet, gateway in found:
        if subnet:
            out.setdefault(6 if ":" in str(subnet) else 4, (str(subnet), gateway))
    return out


def spec_of(conf: dict[str, Any]) -> NetworkSpec:
    by_family = _subnets(conf)
    if not by_family:
        raise CniError(INVALID_CONFIG, "no subnet: set 'subnet' (or ipam.subnet / "
                       "ipam.ranges)")
    subnet, gateway = by_family.get(4, ("", None))
    subnet6, gateway6 = by_family.get(6, (None, None))
    try:
        if subnet:
            Pool.parse(subnet, gateway, conf.get("ipRange"))
        if subnet6:
            Pool.parse(subnet6, gateway6)
    except InvalidInput as exc:
        raise CniError(INVALID_CONFIG, str(exc)) from None
    masq = conf.get("masquerade", conf.get("ipMasq", True))
    # the spec's "dns" key is a dict of resolver settings (nsnet's DNS stays on);
    # nsnet also takes a plain true/false there
    dns = conf.get("dns", True)
    if conf.get("isolation") is False:
        raise CniError(UNSUPPORTED_FIELD, "isolation cannot be turned off: nsnet networks are "
                       "always isolated from each other", "isolation=false")
    return NetworkSpec(str(conf["name"]), subnet, gateway, conf.get("ipRange"),
                       conf.get("bridge"), conf.get("mtu"), bool(masq),
                       bool(conf.get("internal", False)), bool(conf.get("icc", True)),
                       dns if isinstance(dns, bool) else True,
                       tuple(conf.get("dnsServers", ())), ipv6=bool(subnet6),
                       subnet6=subnet6, gateway6=gateway6, ipv4=bool(subnet),
                       # "overlay" (#17): one pod network across the nodes of the
                       # cluster this node joined (nsnet cluster join)
                       driver=str(conf.get("driver", "bridge")))


def ensure_network(eng: Engine, conf: dict[str, Any]) -> Network:
    spec = spec_of(conf)  # a bad configuration is an error even if the network exists
    try:
        net = eng.network(conf["name"])
    except NotFound:
        try:
            return eng.network_create(spec)
        except AlreadyExists:  # another ADD created it meanwhile
            net = eng.network(conf["name"])
    differ = differences(conf, spec, net)
    if differ:
        raise CniError(INVALID_CONFIG, f"network {net.name!r} exists with a different "
                       f"configuration: {', '.join(differ)} differ",
                       "; ".join(f"{key}: has {have!r}, asked {want!r}"
                                 for key, (have, want) in differ.items()))
    return net


def differences(conf: dict[str, Any], spec: NetworkSpec,
                net: Network) -> dict[str, tuple[Any, Any]]:
    """The keys the configuration sets to something other than what the
    existing network has (keys it leaves out take the network's)."""
    pool = Pool.parse(spec.subnet, spec.gateway, spec.ip_range) if spec.subnet else None
    pool6 = Pool.parse(spec.subnet6, spec.gateway6) if spec.subnet6 else None
    asked: dict[str, tuple[Any, Any]] = {
        "subnet": (net.subnet, str(pool.subnet) if pool else ""),
        "gateway": (net.gateway, str(pool.gateway) if pool and spec.gateway else None),
        "ipRange": (net.ip_range, str(pool.ip_range) if pool and spec.ip_range else None),
        "subnet (IPv6)": (net.subnet6, str(pool6.subnet) if pool6 else ""),
        "gateway (IPv6)": (net.gateway6, str(pool6.gateway) if pool6 and spec.gateway6
                           else None),
        "bridge": (net.bridge, conf.get("bridge")),
        "mtu": (net.mtu, conf.get("mtu")),
        "masquerade": (net.masquerade, conf.get("masquerade", conf.get("ipMasq"))),
        "internal": (net.internal, conf.get("internal")),
        "icc": (net.icc, conf.get("icc")),
        "dns": (net.dns, conf["dns"] if isinstance(conf.get("dns"), bool) else None),
        "dnsServers": (list(net.dns_servers), conf.get("dnsServers")),
        "driver": (net.driver, conf.get("driver")),
    }
    differ = {key: (have, want) for key, (have, want) in asked.items()
              if want not in (None, "") and have != want}
    for key in ("subnet", "subnet (IPv6)"):  # a family the configuration leaves out
        have, want = asked[key]
        if have and want == "":
            differ[key] = (have, want)
    return differ


# -------------------------------------------------------------- namespaces
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type
CLONE_NEWNET = 0x40000000
MOUNT_PREFIX = "cni-"


def open_netns_path(path: str) -> int:
    """Open CNI_NETNS as the reference plugins do (no realpath: a magic link
    such as /proc/PID/ns/net or /proc/PID/task/TID/ns/net resolves only when
    opened) and make sure it is a network namespace.  Returns the fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} does not exist", "CNI_NETNS") from None
    except OSError as exc:
        raise CniError(INVALID_ENV, f"CNI_NETNS {path}: {exc.strerror}", "CNI_NETNS") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = -1
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace",
                       "CNI_NETNS")
    return fd


def mount_name(network: str, container_id: str, ifname: str) -> str:
    """The netns-directory name of an attachment's bind mount: unique per
    network, container id (a digest of all of it, not a prefix) and interface."""
    digest = hashlib.sha256(f"{network}\0{container_id}".encode()).hexdigest()[:16]
    return f"{MOUNT_PREFIX}{container_id[:12]}-{digest}-{ifname}"


def _in_netns_dir(eng: Engine, path: str, fd: int) -> str | None:
    """The name of ``path`` in the engine's netns directory if it is (or is a
    symlink to) one of its entries: bind mounts under /run/netns or
    /var/run/netns.  Magic /proc links never are."""
    if path.startswith("/proc/"):
        return None
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(eng.netns_dir):
        return None
    try:
        same = os.stat(real)
    except OSError:
        return None
    st = os.fstat(fd)
    return os.path.basename(real) if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino) \
        else None


def attach_netns(eng: Engine, req: Request) -> tuple[str, str]:
    """The engine's name for the container's namespace, and the bind mount
    made for it ("" if the runtime already put it in the netns directory)."""
    fd = open_netns_path(req.netns)
    try:
        name = _in_netns_dir(eng, req.netns, fd)
        if name:
            return name, ""
        name = mount_name(req.network, req.container_id, req.ifname)
        target = eng.ns_path(name)
        k.ensure_netns_dir(eng.netns_dir)
        with contextlib.suppress(OSError):  # a stale one from an interrupted ADD
            k.remove_netns(target)
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0))
        k.mount_bind(f"/proc/self/fd/{fd}", target)  # the namespace opened, not a new lookup
        return name, target
    finally:
        os.close(fd)


def own_mount(eng: Engine, att: dict[str, Any]) -> str:
    """An attachment's bind mount, only if it is where nsnet puts them (the
    netns directory, a ``cni-`` name): a record never names a path to delete."""
    mount, name = att.get("mount") or "", str(att.get("netns") or "")
    if not mount or not name.startswith(MOUNT_PREFIX) or "/" in name or name in (".", ".."):
        return ""
    return mount if mount == eng.ns_path(name) else ""


def detach_netns(mount: str) -> None:
    if mount:
        with contextlib.suppress(OSError):
            k.remove_netns(mount)


# ------------------------------------------------------------------- IPAM
def delegated_ipam(conf: dict[str, Any]) -> str | None:
    kind = (conf.get("ipam") or {}).get("type")
    return None if kind in (None, "", "nsnet") else str(kind)


def exec_ipam(kind: str, command: str, conf: dict[str, Any],
              environ: Mapping[str, str]) -> dict[str, Any]:
    paths = [p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p]
    exe = next((os.path.join(p, kind) for p in paths if os.access(os.path.join(p, kind),
                                                                   os.X_OK)), None)
    if exe is None:
        raise CniError(INVALID_CONFIG, f"IPAM plugin {kind!r} not found in CNI_PATH",
                       environ.get("CNI_PATH", ""))
    conf = dict(conf, cniVersion=_common_version(exe, str(conf["cniVersion"]), environ))
    env = dict(environ, CNI_COMMAND=command)
    try:
        proc = subprocess.run([exe], input=json.dumps(conf), capture_output=True, text=True,
                              env=env, timeout=DELEGATE_WAIT)
    except subprocess.TimeoutExpired:
        raise CniError(TRY_AGAIN, f"IPAM {kind} did not answer {command} in "
                       f"{DELEGATE_WAIT:.0f} s") from None
    if proc.returncode:
        try:
            err = json.loads(proc.stdout)
            raise CniError(int(err.get("code", PLUGIN_ERROR)), f"IPAM {kind}: {err.get('msg')}",
                           str(err.get("details", "")))
        except ValueError:
            raise CniError(PLUGIN_ERROR, f"IPAM {kind} failed", proc.stderr.strip()) from None
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def _common_version(exe: str, asked: str, environ: Mapping[str, str]) -> str:
    """The version to speak to a delegate: the runtime's if it knows it,
    else the newest it knows (Debian's host-local stops at 1.0.0)."""
    try:
        proc = subprocess.run([exe], input=json.dumps({"cniVersion": asked}),
                              capture_output=True, text=True, timeout=DELEGATE_WAIT,
                              env=dict(environ, CNI_COMMAND="VERSION"))
    except subprocess.TimeoutExpired:
        return asked
    try:
        known = json.loads(proc.stdout).get("supportedVersions") or []
    except ValueError:
        return asked
    if asked in known or not known:
        return asked
    older = [v for v in known if _vtuple(v) <= _vtuple(asked)]
    return max(older or known, key=_vtuple)


# ---------------------------------------------------------------- results
def result(req: Request, net: Network, ep: Any, bridge_mac: str,
           host_mac: str) -> dict[str, Any]:
    old = _vtuple(req.version) < (1, 0, 0)
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, str]] = []
    for address, gateway, version, default in ((ep.address, net.gateway, "4", "0.0.0.0/0"),
                                               (ep.address6, net.gateway6, "6", "::/0")):
        if not address:
            continue
        ip: dict[str, Any] = {"address": address, "gateway": gateway, "interface": 2}
        if old:
            ip["version"] = version
        ips.append(ip)
        if ep.default_route:
            routes.append({"dst": default, "gw": gateway})
    out: dict[str, Any] = {
        "cniVersion": req.version,
        "interfaces": [{"name": net.bridge, "mac": bridge_mac},
                       {"name": ep.host_ifname, "mac": host_mac},
                       {"name": ep.ifname, "mac": ep.mac, "sandbox": req.netns}],
        "ips": ips,
        "routes": routes,
    }
    if net.dns:
        out["dns"] = {"nameservers": list(net.gateways)}
    return out


# --------------------------------------------------------------- commands
def cmd_add(req: Request) -> dict[str, Any]:
    os.close(open_netns_path(req.netns))  # before anything is created
    # One lock from the bind mount to the endpoint: a concurrent reconcile,
    # GC or ADD never sees an attachment recorded but not yet connected.
    with engine_for(req) as eng, eng.exclusive():
        net = ensure_network(eng, req.conf)
        for a in eng.attachments(net.name):
            if a["containerID"] == req.container_id and a["ifname"] == req.ifname:
                # The spec forbids a second ADD without a DEL: the runtime lost the
                # first result (e.g. could not parse it), so nobody will DEL it.
                req.log(f"nsnet-cni: ADD again for {req.container_id}/{req.ifname}: "
                     "reclaiming the earlier attachment")
                _detach(eng, net.name, a)
                if delegated_ipam(req.conf):
                    with contextlib.suppress(CniError, OSError, ValueError):
                        exec_ipam(str(delegated_ipam(req.conf)), "DEL",
                                  dict(req.conf, cniVersion=req.version), req.env)
                net = eng.network(net.name)
        name, mount = attach_netns(eng, req)
        crashpoint("cni:netns-attached")
        kind = delegated_ipam(req.conf)
        ipam_conf = dict(req.conf, cniVersion=req.version)
        # Recorded before it is made (as topology objects are): a plugin
        # killed anywhere after this leaves a record that the runtime's DEL,
        # GC or the next ADD follows, never an endpoint nobody knows about.
        eng.record_attachment(req.container_id, req.ifname, net.name, name, mount,
                              {"type": kind} if kind else {})
        crashpoint("cni:recorded")
        try:
            static, static6 = _static_ips(req)
            if kind:  # the delegated IPAM's address of each family
                got = exec_ipam(kind, "ADD", ipam_conf, req.env)
                addrs = [ipaddress.ip_interface(i["address"]).ip for i in got.get("ips", [])]
                static = next((str(a) for a in addrs if a.version == 4), None)
                static6 = next((str(a) for a in addrs if a.version == 6), None)
            # force_ports: the runtime allocates host ports (podman binds and
            # holds each one itself before calling the plugin)
            opts = ConnectOptions(ip=static, ip6=static6, mac=_static_mac(req),
                                  ifname=req.ifname,
                                  ports=_ports(req), aliases=_aliases(req), force_ports=True)
            ep = eng.connect(net.name, [name], opts)[0]
            crashpoint("cni:connected")
        except BaseException:
            if kind:
                with contextlib.suppress(CniError, OSError, ValueError):
                    exec_ipam(kind, "DEL", ipam_conf, req.env)
            detach_netns(mount)
            eng.forget_attachment(req.container_id, req.ifname, net.name)
            raise
        links = eng.host_links()
        macs = {name: links[name].mac if name in links else "" for name in
                (net.bridge, ep.host_ifname)}
        return result(req, net, ep, macs[net.bridge], macs[ep.host_ifname])


def _static_ips(req: Request) -> tuple[str | None, str | None]:
    """The requested address of each family (CNI_ARGS IP=, possibly
    comma-separated, or the ``ips`` capability): (IPv4, IPv6)."""
    ips = (req.conf.get("runtimeConfig") or {}).get("ips") or []
    texts = req.args["IP"].split(",") if req.args.get("IP") else list(ips)
    out: dict[int, str] = {}
    for text in texts:
        try:
            ip = ipaddress.ip_interface(str(text).strip()).ip
        except ValueError:
            raise CniError(INVALID_CONFIG, f"requested IP {text!r} is not an address") from None
        out.setdefault(ip.version, str(ip))
    return out.get(4), out.get(6)


def _aliases(req: Request) -> tuple[str, ...]:
    """DNS names for the container: the runtime's ``aliases`` capability
    (podman passes the container name there), K8S_POD_NAME, and the
    container ID -- the only name some runtimes give (containerd's ``ctr run
    --cni`` passes "<namespace>-<id>" and no aliases)."""
    rc = req.conf.get("runtimeConfig") or {}
    names = list((rc.get("aliases") or {}).get(req.network) or [])
    if req.args.get("K8S_POD_NAME"):
        names.append(req.args["K8S_POD_NAME"])
    names.append(req.container_id)
    out: list[str] = []
    for name in names:
        with contextlib.suppress(InvalidInput):  # a name DNS cannot carry is just not served
            dns = validate_dns_name(str(name))
            if dns not in out:
                out.append(dns)
    return tuple(out)


def _static_mac(req: Request) -> str | None:
    return req.args.get("MAC") or (req.conf.get("runtimeConfig") or {}).get("mac") or None


def _ports(req: Request) -> tuple:
    if not (req.conf.get("capabilities") or {}).get("portMappings"):
        return ()
    specs = []
    for m in (req.conf.get("runtimeConfig") or {}).get("portMappings") or []:
        host_ip = m.get("hostIP", "")
        specs.append(f"{host_ip + ':' if host_ip else ''}{m['hostPort']}:{m['containerPort']}"
                     f"/{m.get('protocol', 'tcp')}")
    return parse_ports(specs)


def cmd_del(req: Request) -> None:
    with engine_for(req) as eng, eng.exclusive():
        found = next((a for a in eng.attachments(req.network)
                      if a["containerID"] == req.container_id and a["ifname"] == req.ifname),
                     None)
        if found:
            _detach(eng, req.network, found)
        kind = delegated_ipam(req.conf)
        if kind:  # released even when nsnet never saw the attachment
            exec_ipam(kind, "DEL", dict(req.conf, cniVersion=req.version), req.env)


def _detach(eng: Engine, network: str, att: dict[str, Any]) -> None:
    with contextlib.suppress(NotFound, InvalidInput):
        eng.disconnect(network, [att["netns"]])
    crashpoint("cni:disconnected")
    mount = own_mount(eng, att)
    detach_netns(mount)
    crashpoint("cni:netns-detached")
    # the namespace record connect made for the bind mount goes with it
    eng.forget_attachment(att["containerID"], att["ifname"], network,
                          att["netns"] if mount else None)


def cmd_check(req: Request) -> None:
    with engine_for(req) as eng:
        att = next((a for a in eng.attachments(req.network)
                    if a["containerID"] == req.container_id and a["ifname"] == req.ifname),
                   None)
        if att is None:
            raise CniError(UNKNOWN_CONTAINER, f"no attachment of {req.container_id} "
                           f"({req.ifname}) on network {req.network!r}")
        net = eng.network(req.network)
        ep = next((e for e in net.endpoints if e.netns == att["netns"]), None)
        if ep is None:
            raise CniError(UNKNOWN_CONTAINER, "the attachment's endpoint is gone")
        try:
            snap = eng.snapshot(att["netns"])
        except NotFound:
            raise CniError(INVALID_ENV, f"the container's namespace {req.netns or att['netns']} "
                           "is gone") from None
        if snap.link(req.ifname) is None:
            raise CniError(PLUGIN_ERROR, f"container interface {req.ifname} not found (in "
                           f"{req.netns or att['netns']})")
        have = {a.cidr for a in snap.addresses_of(req.ifname)}
        if ep.address6:
            have |= {a.cidr for a in eng.snapshot6(att["netns"]).addresses_of(req.ifname)}
        for address in (a for a in (ep.address, ep.address6) if a):
            if address not in have:
                raise CniError(PLUGIN_ERROR, f"{req.ifname} lacks {address} in the container")


def cmd_status(req: Request) -> None:
    try:
        with engine_for(req) as eng:
            eng.networks()
            eng.host_links()
    except (StateError, LockTimeout, PermissionDenied, OSError, NsnetError) as exc:
        raise CniError(NOT_AVAILABLE, f"nsnet cannot add containers now: {exc}") from None


def cmd_gc(req: Request) -> None:
    valid = {(a.get("containerID"), a.get("ifname"))
             for a in req.conf.get("cni.dev/valid-attachments") or []}
    with engine_for(req) as eng, eng.exclusive():
        for att in eng.attachments(req.network):
            if (att["containerID"], att["ifname"]) not in valid:
                _detach(eng, req.network, att)


# ------------------------------------------------------------------- main
def handle(command: str, env: Mapping[str, str], stdin: bytes,
           stderr: TextIO) -> tuple[int, str]:
    """One plugin execution: the exit code and what goes to stdout.  Logs go
    to ``stderr`` (or the configuration's logFile)."""
    version = "1.1.0"
    log = Log(stderr)
    try:
        conf = decode_config(stdin.decode(errors="replace"))
        version = reply_version(conf)
        req = read_request(command, conf, env, log)
        log.to(req.conf.get("logFile"))
        if command == "ADD":
            return 0, json.dumps(cmd_add(req)) + "\n"
        {"DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}[command](req)
        return 0, ""
    except CniError as exc:
        return _fail(log, version, exc.code, exc.msg, exc.details)
    except LockTimeout as exc:
        return _fail(log, version, TRY_AGAIN, str(exc))
    except InvalidInput as exc:
        return _fail(log, version, INVALID_CONFIG, str(exc))
    except NsnetError as exc:
        return _fail(log, version, PLUGIN_ERROR, str(exc), type(exc).__name__)
    except OSError as exc:
        return _fail(log, version, IO_FAILURE, str(exc))
    except Exception as exc:  # a runtime gets the spec's JSON, never a traceback
        return _fail(log, version, PLUGIN_ERROR, f"internal error: {exc!r}"[:300],
                     type(exc).__name__)
    finally:
        log.close()


def run(command: str) -> int:
    """The plugin process: this process's environment, stdin and stdout."""
    rc, out = handle(command, os.environ, sys.stdin.buffer.read(), sys.stderr)
    sys.stdout.write(out)
    sys.stdout.flush()
    return rc


def run_request(env: Mapping[str, str], stdin: bytes) -> tuple[int, str, str]:
    """One execution on behalf of a client (the agent): the client's CNI_*
    and NSNET_* variables replace this process's own, in a copy."""
    import io

    full = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NSNET_"))}
    full.update(env)
    err = io.StringIO()
    rc, out = handle(env.get("CNI_COMMAND", ""), full, stdin, err)
    return rc, out, err.getvalue()


def _fail(log: Log, version: str, code: int, msg: str, details: str = "") -> tuple[int, str]:
    err: dict[str, Any] = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        err["details"] = details
    log(f"nsnet-cni: error {code}: {msg}" + (f" ({details})" if details else ""))
    return 1, json.dumps(err) + "\n"
