"""Cluster membership as the CLI (and later the overlay driver) uses it.

``join`` records the membership in STATE_DIR/cluster.json and registers
the host with a liveness lease; the lease lives only while someone renews
it: :func:`cluster_agent` does (``nsnet cluster agent``, in the foreground,
for a service manager; the overlay driver will run it for its hosts).  A
host whose agent stops is shown as not alive once its TTL passes -- which
is the point: that is how the cluster tells a dead host.

Every store connection is made from the host namespace (``host_netns``),
as every kernel change of nsnet is: the etcd members are on its underlay.
"""

from __future__ import annotations

import os
import socket
import threading

from ..errors import Conflict
from .membership import (
    DEFAULT_TTL,
    ClusterConfig,
    ClusterStatus,
    forget,
    join,
    leave,
    renew,
    status,
)
from .store import Store, parse_store_url


def _netns_path(host_netns: str | None, netns_dir: str) -> str | None:
    if host_netns is None:
        return None
    return host_netns if "/" in host_netns else os.path.join(netns_dir, host_netns)


def _open(config: ClusterConfig, host_netns: str | None, netns_dir: str,
          timeout: float | None = None) -> Store:
    """A store client; ``timeout`` (seconds per request and member; None:
    the configuration's, ``NSNET_STORE_TIMEOUT``, default 5) bounds how long
    a store without quorum is waited for."""
    from ..config import Config
    from .store import EtcdStore

    if timeout is None:
        timeout = Config.from_env().store_timeout
    return EtcdStore(parse_store_url(config.store, config.ca_cert, config.cert, config.key,
                                     timeout, _netns_path(host_netns, netns_dir)))


def cluster_join(store: str, advertise: str, *, state_dir: str, host_netns: str | None = None,
                 netns_dir: str = "/run/netns", name: str | None = None,
                 ttl: int = DEFAULT_TTL, ca_cert: str | None = None, cert: str | None = None,
                 key: str | None = None) -> ClusterConfig:
    """Join the cluster whose store is ``store`` (``etcd://H:P,...``),
    reachable from this host at the underlay address ``advertise``.
    Joining again with the same store and name is a no-op."""
    cfg = parse_store_url(store, ca_cert, cert, key)  # validates before any I/O
    name = name or socket.gethostname().split(".")[0]
    try:
        old = ClusterConfig.load(state_dir)
    except Exception:
        old = None
    if old is not None and (old.store != cfg.url or old.host != name):
        raise Conflict(f"this host already joined {old.store} as {old.host!r}: "
                       "nsnet cluster leave first")
    config = ClusterConfig(cfg.url, name, advertise, ttl=ttl, ca_cert=ca_cert, cert=cert,
                           key=key)
    conn = _open(config, host_netns, netns_dir)
    try:
        config.lease = join(conn, name, advertise, ttl, old_lease=old.lease if old else 0)
    finally:
        conn.close()
    config.save(state_dir)
    return config


def cluster_status(*, state_dir: str, host_netns: str | None = None,
                   netns_dir: str = "/run/netns") -> tuple[ClusterConfig, ClusterStatus]:
    """This host's membership and the cluster as the store sees it."""
    config = ClusterConfig.load(state_dir)
    conn = _open(config, host_netns, netns_dir)
    try:
        return config, status(conn)
    finally:
        conn.close()


def cluster_leave(*, state_dir: str, host_netns: str | None = None,
                  netns_dir: str = "/run/netns", force: bool = False) -> ClusterConfig:
    """Leave: refused while this host has overlay endpoints (unless
    ``force``); releases its address blocks and liveness."""
    config = ClusterConfig.load(state_dir)
    conn = _open(config, host_netns, netns_dir)
    try:
        leave(conn, config.host, config.lease, force=force)
    finally:
        conn.close()
    ClusterConfig.remove(state_dir)
    return config


def cluster_forget(host: str, *, state_dir: str, host_netns: str | None = None,
                   netns_dir: str = "/run/netns") -> ClusterConfig:
    """Declare a dead host gone (an operator's decision): its address
    blocks are released for other hosts.  Refused while it is alive."""
    config = ClusterConfig.load(state_dir)
    conn = _open(config, host_netns, netns_dir)
    try:
        forget(conn, host)
    finally:
        conn.close()
    return config


def cluster_agent(*, state_dir: str, host_netns: str | None = None,
                  netns_dir: str = "/run/netns", stop: threading.Event | None = None,
                  on_renew=None) -> None:
    """Renew this host's liveness lease every TTL/3 until ``stop`` is set;
    re-register if the lease expired (a partition longer than the TTL).
    A store without quorum is waited out, not fatal."""
    from ..errors import StoreUnavailable

    stop = stop or threading.Event()
    config = ClusterConfig.load(state_dir)
    conn = _open(config, host_netns, netns_dir, timeout=max(1.0, config.ttl / 4))
    try:
        while not stop.is_set():
            try:
                lease, renewed = renew(conn, config.host, config.lease, config.advertise)
            except StoreUnavailable as exc:
                if on_renew:
                    on_renew(False, str(exc))
            else:
                if lease != config.lease:
                    config.lease = lease
                    config.save(state_dir)
                if on_renew:
                    on_renew(True, "renewed" if renewed else "registered again")
            stop.wait(config.ttl / 3)
    finally:
        conn.close()
