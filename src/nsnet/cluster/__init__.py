"""Multi-host state for overlay networks, kept in etcd.

Single-host networks keep nsnet's embedded SQLite store and need none of
this.  An overlay network spans hosts, so what must be agreed on between
hosts -- which hosts exist and are alive, each network's VNI, which host
owns which address block, which endpoint lives behind which VTEP -- lives
in an etcd cluster (an existing, proven distributed store; nsnet does not
grow one of its own).

  store.py       the narrow store interface; etcd (via etcd3gw) and a fake
  keys.py        the key layout, and the rule for a dead host's addresses
  membership.py  join / renew / leave / forget / status
  alloc.py       overlay networks and VNIs, address blocks, local allocation
  registry.py    endpoint records -> desired FDB/neighbour entries -> kernel

Nothing here creates a kernel object by itself except
:class:`registry.VxlanApplier` (through nsnet.kernel); the overlay network
driver (validate/setup/teardown, the engine's seam) composes these parts.
"""

from __future__ import annotations

from .keys import Keys
from .membership import ClusterConfig, ClusterStatus, HostStatus
from .store import EtcdStore, MemoryStore, Store, StoreConfig, parse_store_url

__all__ = ["ClusterConfig", "ClusterStatus", "EtcdStore", "HostStatus", "Keys", "MemoryStore",
           "Store", "StoreConfig", "parse_store_url"]
