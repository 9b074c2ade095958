/* Keys and values of the maps. Go uses the bpf2go-generated mirrors of these; never hand-copy. */
#pragma once
#include <linux/types.h>

/* Addresses are 16 bytes in network order; IPv4 is stored v4-mapped (::ffff:a.b.c.d). */

struct svc_key {
	__u8 addr[16]; /* VIP */
	__u16 port;    /* host byte order (readable in bpftool); 0 = every port of the VIP */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct service {
	__u32 id;              /* index into maglev (id*2 + slot) and svc_stats */
	__u32 flags;           /* SVC_F_* */
	__u32 sched;           /* SCHED_* */
	__u32 persist_timeout; /* seconds; 0 = no persistence */
	__u32 active_slot;     /* which of the two maglev rings packets use (0 or 1) */
	__u32 sorry_backend;   /* backend id used when the ring is empty; 0 = none (drop) */
};

struct backend {
	__u8 addr[16];  /* real server address (shown by tools; DR does not rewrite IP) */
	__u8 mac[6];    /* destination MAC written into forwarded frames */
	__u16 flags;    /* BE_F_* */
	__u32 service;  /* id of the service this backend belongs to */
	__u32 weight;   /* Maglev weight (informational for the data path) */
};

struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; /* network byte order, as on the wire */
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow {
	__u32 backend;
	__u32 pad;
	__u64 last_seen; /* bpf_ktime_get_coarse_ns() */
};

struct persist_key {
	__u32 service;
	__u8 client[16];
};

struct persist_entry {
	__u32 backend;
	__u32 pad;
	__u64 last_seen;
};

struct peer_key {
	__u8 mac[6];
};

struct peer {
	__u32 flags; /* PEER_F_*: who vouches for it (the config, the daemon's learning, or both) */
};

struct vip {
	__u32 services; /* number of services on this VIP; the entry exists only while > 0 */
};

/* Verdict counters. Every packet increments `packets` and exactly one tx/pass/drop field, so
 * packets = tx + pass_* + drop_* (per CPU). The other fields explain how a backend was chosen. */
struct counters {
	__u64 packets;
	__u64 tx;               /* forwarded to a remote real server */
	__u64 pass_local;       /* chosen real server is this node */
	__u64 pass_peer;        /* source MAC is a peer director: already balanced, serve locally */
	__u64 pass_not_ip;      /* ARP, LLDP, double-tagged VLAN, any non-IPv4/IPv6 ethertype */
	__u64 pass_not_unicast; /* broadcast or multicast destination MAC */
	__u64 pass_other_host;  /* unicast to another host's MAC (flooded by a switch, promiscuous NIC) */
	__u64 pass_vrrp;        /* IP protocol 112, for the VRRP daemon */
	__u64 pass_no_service;  /* not addressed to a configured VIP:port/proto */
	__u64 pass_ipv6_ext;    /* IPv6 with extension headers to a VIP: left to the kernel */
	__u64 pass_malformed;   /* IP header the parser cannot trust: the kernel applies its own rules */
	__u64 pass_orphaned;    /* to a VIP, but the director lease expired (no daemon): served locally */
	__u64 drop_fragment;    /* IPv4 fragment to a VIP: ports unknown, cannot be balanced */
	__u64 drop_malformed;   /* truncated TCP/UDP header to a VIP */
	__u64 drop_no_backend;  /* service without usable backend and without sorry server */
	__u64 drop_orphan_nd;   /* ARP request or IPv6 neighbour solicitation for a VIP, lease expired */
	__u64 ct_hit;           /* conntrack entry used */
	__u64 ct_stale;         /* conntrack entry pointed at a removed backend: rescheduled */
	__u64 ct_insert_fail;   /* conntrack/persist update failed (counted, packet still forwarded) */
	__u64 persist_hit;      /* persistence entry used for a new flow */
	__u64 new_flow;         /* flow scheduled by Maglev (or sorry server) */
	__u64 sorry;            /* flow sent to the sorry server */
};

/* Per service and per backend traffic, per CPU. */
struct traffic {
	__u64 packets;
	__u64 bytes; /* whole frames as received */
	__u64 new_flows;
};

/* Written once by the loader so every tool reading the pins knows the layout. */
struct layout {
	__u32 version;   /* XDPLB_LAYOUT_VERSION */
	__u32 ring_size; /* Maglev ring size M (prime) */
	__u32 hash_seed; /* seed of the flow hash */
	__u32 pad;
	__u8 mac[6];     /* the interface's MAC: frames to other MACs are not ours (all zero: no check) */
	__u8 pad2[2];
	/* The director lease: CLOCK_MONOTONIC ns until which the daemon vouches for this data path;
	 * 0 = no lease (attached without a daemon). Once it has passed, the program stops being a
	 * director: every frame goes to the local stack and ARP/NDP for the VIPs is dropped, so an
	 * orphaned data path neither balances nor attracts traffic (docs/datapath.md). */
	__u64 lease_until;
	/* Whose pins these are: the network namespace (its cookie) and index of the interface the
	 * program was attached to. Two directors in two namespaces of one host share one bpffs; a
	 * director never adopts the pins of an interface in another namespace. */
	__u64 netns_cookie;
	__u32 ifindex;
	__u32 pad3;
};
