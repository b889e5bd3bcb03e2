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
driver, :mod:`nsnet.engine.overlay` (behind the engine's NetworkDriver
seam), composes these parts, and so does tests/overlay_world.py's
``HostOverlay`` by hand, in the order the driver keeps:

* validate: the host joined (ClusterConfig), the network exists in the
  store (alloc.get_network), the underlay MTU leaves room (overlay_mtu);
* setup of a network on a host (once): bridge + VXLAN device
  (kernel.vxlan.req_new_vxlan, learning off, proxy), then a watcher on
  ``endpoints/<net>/`` feeding an applier synced from the kernel;
* connect: journal the intent locally; an address from the host's blocks
  (BlockAllocator: no store call unless a block must be claimed); the
  kernel objects; the endpoint record on the host's lease last -- a store
  failure before the kernel step leaves nothing, one after it undoes the
  kernel step;
* disconnect: withdraw the record first (remote hosts stop sending), then
  the kernel objects, then the local address;
* liveness: one agent per host renews the lease (api.cluster_agent
  re-registers after an expiry; republishing the host's records from its
  local state, registry.publish_many, is the driver's part -- HostOverlay
  shows it).
"""

from __future__ import annotations

from .keys import Keys
from .membership import ClusterConfig, ClusterStatus, HostStatus
from .store import EtcdStore, MemoryStore, Store, StoreConfig, parse_store_url

__all__ = ["ClusterConfig", "ClusterStatus", "EtcdStore", "HostStatus", "Keys", "MemoryStore",
           "Store", "StoreConfig", "parse_store_url"]
