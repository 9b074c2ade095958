//go:build ignore

/* xdplb: layer-4 direct-routing load balancer. See docs/datapath.md for the walk-through. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "hash.h"
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Load-time knobs, set by the loader before load. */
volatile const __u32 hash_seed = 0;
volatile const __u32 ring_size = DEFAULT_RING_SIZE;
/* Benchmarks only: skip the conntrack lookup so every packet takes the new-flow path. Always 0 in
 * production, where the verifier sees the constant and removes the branch. */
volatile const __u32 ct_bypass = 0;
/* Benchmarks only: PROF_SKIP_* bits leave one step out, so `xdplb bench` can show what each step
 * of the conntrack-hit path costs (no hardware counters for bpftool prog profile in VMs). Always
 * 0 in production: the verifier sees the constant and removes the branches. */
volatile const __u32 prof_skip = 0;


static __always_inline int mac_set(const __u8 *m)
{
	return m[0] | m[1] | m[2] | m[3] | m[4] | m[5];
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
		(a[5] ^ b[5])) == 0;
}

static __always_inline void count_traffic(void *map, __u32 id, __u64 bytes, int new_flow)
{
	struct traffic *t = bpf_map_lookup_elem(map, &id);

	if (!t)
		return;
	t->packets++;
	t->bytes += bytes;
	if (new_flow)
		t->new_flows++;
}

/* The director lease (struct layout) has passed: the daemon that vouched for this data path is
 * gone or hung, and another director may have taken over. Never true without a lease. */
static __always_inline int lease_expired(const struct layout *l, __u64 now)
{
	return l && l->lease_until && now > l->lease_until;
}

struct arp_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

/* An orphaned data path must not attract traffic: a killed daemon leaves the VIPs on the
 * interface, and the kernel would go on answering ARP for them. 1: an ARP request for a VIP
 * while the lease has passed (the frame is dropped). */
static __always_inline int orphan_arp_for_vip(const struct packet *p, void *data, void *data_end)
{
	struct arp_ipv4 *a = data + p->l3_off;
	__u8 key[16] = { [10] = 0xff, [11] = 0xff };
	__u32 zero = 0;

	if (p->l3_proto != bpf_htons(ETH_P_ARP) || p->l3_off > 18 || (void *)(a + 1) > data_end)
		return 0;
	if (a->op != bpf_htons(1) || a->ptype != bpf_htons(ETH_P_IP) || a->hlen != 6 || a->plen != 4)
		return 0; /* only requests: replies and other hardware types are not ours to judge */
	if (!lease_expired(bpf_map_lookup_elem(&meta, &zero), bpf_ktime_get_coarse_ns()))
		return 0;
	__builtin_memcpy(&key[12], a->tpa, 4);
	return bpf_map_lookup_elem(&vips, key) != NULL;
}

/* The same for IPv6: 1 for a neighbour solicitation (ICMPv6 135) whose target is a VIP while the
 * lease has passed. Solicitations go to a solicited-node group or, to confirm reachability, to the
 * VIP itself; p is a parsed ICMPv6 packet without extension headers (PARSE_NOT_L4). */
static __always_inline int orphan_ns_for_vip(const struct packet *p, void *data, void *data_end)
{
	__u8 *icmp = data + p->l3_off + sizeof(struct ipv6hdr);
	__u8 key[16];
	__u32 zero = 0;

	if (p->l3_proto != bpf_htons(ETH_P_IPV6) || p->flow.proto != PROTO_ICMPV6 || p->l3_off > 18)
		return 0;
	if (icmp + 24 > (__u8 *)data_end || icmp[0] != 135 || icmp[1] != 0)
		return 0; /* type, code, checksum, reserved, then the 16-byte target */
	if (!lease_expired(bpf_map_lookup_elem(&meta, &zero), bpf_ktime_get_coarse_ns()))
		return 0;
	__builtin_memcpy(key, icmp + 8, 16);
	return bpf_map_lookup_elem(&vips, key) != NULL;
}

/* A backend id is usable for a service when its slot is allocated to that service. */
static __always_inline struct backend *backend_for(__u32 id, __u32 svc)
{
	struct backend *be;

	if (id == 0)
		return NULL;
	be = bpf_map_lookup_elem(&backends, &id);
	if (!be || !(be->flags & BE_F_USED) || be->service != svc)
		return NULL;
	return be;
}

static __always_inline __u32 flow_hash(const struct flow_key *k, const struct service *svc)
{
	__u32 h = hash_seed;

	h = hash_addr(h, k->src);
	if (svc->flags & SVC_F_HASH_SRC_ONLY) {
		/* Persistent service: one client, one real server, whatever its ports (and on
		 * every director, since the service id is local but the VIP is not). */
		h = hash_addr(h, k->dst);
		h = hash_mix(h, k->proto);
		return hash_final(h, 36);
	}
	h = hash_addr(h, k->dst);
	h = hash_mix(h, ((__u32)k->sport << 16) | k->dport);
	h = hash_mix(h, k->proto);
	return hash_final(h, 40);
}

static __always_inline void persist_touch(__u32 svc, const __u8 *client, __u32 be_id, __u64 now,
					  struct counters *c)
{
	struct persist_key pk = { .service = svc };
	struct persist_entry np = { .backend = be_id, .last_seen = now };

	__builtin_memcpy(pk.client, client, 16);
	if (bpf_map_update_elem(&persist, &pk, &np, BPF_ANY))
		c->ct_insert_fail++;
}

/* Maglev: the ring in the service's active slot; 0 when there is none or it is empty. */
static __always_inline __u32 maglev_pick(const struct flow_key *k, const struct service *svc)
{
	__u32 key = svc->id * 2 + (svc->active_slot & 1);
	__u32 slot, *id;
	void *ring;

	ring = bpf_map_lookup_elem(&maglev, &key);
	if (!ring || ring_size == 0)
		return 0;
	slot = flow_hash(k, svc) % ring_size;
	id = bpf_map_lookup_elem(ring, &slot);
	return id ? *id : 0;
}

SEC("xdp")
int xdplb_prog(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct packet p = {};
	struct ethhdr *eth;
	struct counters *c;
	struct service *svc;
	struct svc_key sk = {};
	struct backend *be = NULL;
	struct layout *l;
	struct flow *f;
	__u32 zero = 0, be_id = 0;
	__u64 now;
	int verdict, new_flow = 0;

	c = bpf_map_lookup_elem(&stats, &zero);
	if (!c)
		return XDP_PASS; /* cannot happen: a one-entry array always has entry 0 */
	c->packets++;

	eth = data;
	if ((void *)(eth + 1) > data_end) {
		c->pass_malformed++;
		return XDP_PASS; /* runt frame: the kernel drops it */
	}
	verdict = parse_packet(&p, data, data_end);
	switch (verdict) {
	case PARSE_NOT_IP:
		if (orphan_arp_for_vip(&p, data, data_end)) {
			c->drop_orphan_nd++;
			return XDP_DROP; /* orphaned: the VIPs must not be answered for from here */
		}
		c->pass_not_ip++;
		return XDP_PASS; /* ARP and other non-IP traffic belongs to the kernel */
	case PARSE_MALFORMED:
		c->pass_malformed++;
		return XDP_PASS; /* the kernel validates and drops it with its own counters */
	case PARSE_VRRP:
		c->pass_vrrp++;
		return XDP_PASS; /* VRRP adverts go to the daemon untouched */
	case PARSE_V4_MAPPED:
		c->pass_no_service++;
		return XDP_PASS; /* never a VIP: keys store IPv4 VIPs v4-mapped, so it must not match */
	}

	/* Fast path: a TCP/UDP packet to a VIP:port service costs one lookup. */
	svc = NULL;
	__builtin_memcpy(sk.addr, p.flow.dst, 16);
	sk.proto = p.flow.proto;
	if (verdict == PARSE_OK) {
		sk.port = bpf_ntohs(p.flow.dport);
		svc = bpf_map_lookup_elem(&services, &sk);
	}
	if (!svc) {
		/* One more lookup settles everything not addressed to a VIP. */
		if (!bpf_map_lookup_elem(&vips, p.flow.dst)) {
			if (verdict == PARSE_NOT_L4 && orphan_ns_for_vip(&p, data, data_end)) {
				c->drop_orphan_nd++;
				return XDP_DROP; /* orphaned: the VIPs must not be answered for from here */
			}
			c->pass_no_service++;
			return XDP_PASS; /* not ours: the director's own traffic */
		}
		switch (verdict) {
		case PARSE_FRAGMENT:
			c->drop_fragment++;
			return XDP_DROP; /* no ports to balance on; as Katran does, documented */
		case PARSE_IPV6_EXT:
			c->pass_ipv6_ext++;
			return XDP_PASS; /* extension headers are not walked: the kernel handles them */
		case PARSE_NOT_L4:
			if (orphan_ns_for_vip(&p, data, data_end)) {
				c->drop_orphan_nd++;
				return XDP_DROP; /* orphaned: the VIPs must not be answered for from here */
			}
			c->pass_no_service++;
			return XDP_PASS; /* ICMP etc. to the VIP: answered by whoever holds it */
		case PARSE_L4_TRUNCATED:
			c->drop_malformed++;
			return XDP_DROP; /* a TCP/UDP packet to a VIP without a whole header */
		}
		sk.port = 0; /* every port of the VIP */
		svc = bpf_map_lookup_elem(&services, &sk);
		if (!svc) {
			c->pass_no_service++;
			return XDP_PASS; /* a VIP port we do not balance */
		}
	}
	if (p.not_unicast) {
		c->pass_not_unicast++;
		return XDP_PASS; /* broadcast/multicast frames are never forwarded to one server */
	}

	/* A unicast frame for another host reaches us when a switch floods it or the NIC is
	 * promiscuous; forwarding it would duplicate the other host's traffic. */
	l = (prof_skip & PROF_SKIP_OWN_MAC) ? NULL : bpf_map_lookup_elem(&meta, &zero);
	if (l && mac_set(l->mac) && !mac_equal(l->mac, eth->h_dest)) {
		c->pass_other_host++;
		return XDP_PASS; /* not addressed to us: the kernel drops it as PACKET_OTHERHOST */
	}

	/* The loop rule: a peer director balanced this frame already; serve it locally. Checked
	 * before conntrack, so an old entry can never send a peer's frame back out. */
	if (!(prof_skip & PROF_SKIP_PEERS)) {
		struct peer_key pk;

		__builtin_memcpy(pk.mac, eth->h_source, 6);
		if (bpf_map_lookup_elem(&peers, &pk)) {
			c->pass_peer++;
			return XDP_PASS; /* already balanced by a peer director */
		}
	}

	if (svc->id >= 0x7fffffff) {
		c->pass_no_service++;
		return XDP_PASS; /* unreachable id: never forward on a corrupt entry */
	}

	now = (prof_skip & PROF_SKIP_CLOCK) ? 0 : bpf_ktime_get_coarse_ns();
	/* No daemon vouches for this data path any more: another director may have taken over, so
	 * balancing here could send frames back and forth. Be a plain real server. */
	if (lease_expired(l, now)) {
		c->pass_orphaned++;
		return XDP_PASS; /* orphaned data path: the local stack serves what it can */
	}

	f = ct_bypass ? NULL : bpf_map_lookup_elem(&conntrack, &p.flow);
	if (f) {
		be = backend_for(f->backend, svc->id);
		if (be) {
			c->ct_hit++;
			be_id = f->backend;
			if (!(prof_skip & PROF_SKIP_CLOCK) && now - f->last_seen > LAST_SEEN_GRANULARITY_NS) {
				f->last_seen = now;
				/* A live flow keeps its client's persistence alive, as in IPVS. */
				if (svc->persist_timeout && !(be->flags & BE_F_SORRY))
					persist_touch(svc->id, p.flow.src, be_id, now, c);
			}
		} else {
			c->ct_stale++;
		}
	}

	if (!be) {
		new_flow = 1;
		c->new_flow++;
		if (svc->persist_timeout) {
			struct persist_key pk = { .service = svc->id };
			struct persist_entry *ps;

			__builtin_memcpy(pk.client, p.flow.src, 16);
			ps = bpf_map_lookup_elem(&persist, &pk);
			if (ps && now - ps->last_seen < (__u64)svc->persist_timeout * NSEC_PER_SEC) {
				be = backend_for(ps->backend, svc->id);
				/* A draining server takes no new connections, persistent or not. */
				if (be && !(be->flags & (BE_F_DRAINING | BE_F_SORRY))) {
					c->persist_hit++;
					be_id = ps->backend;
				} else {
					be = NULL;
				}
			}
		}
		if (!be) {
			be_id = maglev_pick(&p.flow, svc);
			be = backend_for(be_id, svc->id);
		}
		if (!be) {
			be_id = svc->sorry_backend;
			be = backend_for(be_id, svc->id);
			if (!be) {
				c->drop_no_backend++;
				return XDP_DROP; /* nowhere to send it: counted, as IPVS would RST */
			}
			c->sorry++;
		}
		struct flow nf = { .backend = be_id, .last_seen = now };
		if (bpf_map_update_elem(&conntrack, &p.flow, &nf, BPF_ANY))
			c->ct_insert_fail++;
		if (svc->persist_timeout && !(be->flags & BE_F_SORRY))
			persist_touch(svc->id, p.flow.src, be_id, now, c);
	}

	if (!(prof_skip & PROF_SKIP_TRAFFIC)) {
		count_traffic(&svc_stats, svc->id, bytes, new_flow);
		count_traffic(&backend_stats, be_id, bytes, new_flow);
	}

	if (be->flags & BE_F_LOCAL) {
		c->pass_local++;
		return XDP_PASS; /* this node is the real server: the VIP on lo answers */
	}

	{
		/* Direct routing: only the Ethernet addresses change. The frame was unicast to us, so
		 * its destination MAC is ours and becomes the source. */
		__builtin_memcpy(eth->h_source, eth->h_dest, 6);
		__builtin_memcpy(eth->h_dest, be->mac, 6);
	}
	c->tx++;
	return XDP_TX;
}
