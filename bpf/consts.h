/* Constants shared by the XDP program and (through bpf2go's -type) the Go side. */
#pragma once

/* Map layout version, stored in `meta`; bump when a key or value layout changes so that an old
 * pinned set of maps is refused instead of misread. */
#define XDPLB_LAYOUT_VERSION 3 /* 2: one common conntrack LRU list, mmapable rings; 3: director lease */

/* Default sizes; the loader overrides max_entries from its options. */
#define DEFAULT_MAX_SERVICES 256
#define DEFAULT_MAX_BACKENDS 4096
#define DEFAULT_MAX_PEERS 64
#define DEFAULT_CONNTRACK 1048576
#define DEFAULT_PERSIST 65536
#define DEFAULT_RING_SIZE 65537

/* services.flags */
#define SVC_F_HASH_SRC_ONLY (1 << 0) /* hash only the client address: set with persistence */

/* services.sched */
#define SCHED_MAGLEV 0

/* backends.flags */
#define BE_F_USED (1 << 0)     /* slot allocated; an unused slot is never forwarded to */
#define BE_F_LOCAL (1 << 1)    /* the real server is this node: XDP_PASS to the local stack */
#define BE_F_DRAINING (1 << 2) /* no new flows (not in the ring), existing flows finish */
#define BE_F_SORRY (1 << 3)    /* the service's sorry server: used only when the ring is empty */

/* peers.flags: a peer stays while either vouches for it; learned peers are never forgotten by the
 * daemon, because a silent peer may still run a data path (docs/daemon.md). */
#define PEER_F_STATIC (1 << 0)  /* listed under `peers:` in the config */
#define PEER_F_LEARNED (1 << 1) /* heard: its VRRP adverts or its director hellos */

/* IP protocols we balance or pass specially. */
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_VRRP 112
#define PROTO_ICMPV6 58

/* prof_skip bits (benchmarks only): leave one step of the path out. */
#define PROF_SKIP_PEERS (1 << 0)   /* the peer-director lookup */
#define PROF_SKIP_TRAFFIC (1 << 1) /* the per-service and per-backend traffic counters */
#define PROF_SKIP_CLOCK (1 << 2)   /* bpf_ktime_get_coarse_ns() and the last_seen refresh */
#define PROF_SKIP_OWN_MAC (1 << 3) /* the own-MAC (other host) check */

#define NSEC_PER_SEC 1000000000ULL
/* conntrack/persist last_seen is rewritten at most this often, so a busy flow does not dirty a
 * shared cache line on every packet. */
#define LAST_SEEN_GRANULARITY_NS NSEC_PER_SEC
