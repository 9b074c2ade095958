/* Packet parsing: Ethernet with at most one 802.1Q tag, IPv4 (options allowed), IPv6 (no extension
 * headers), TCP and UDP. Every read is bounds-checked against data_end. */
#pragma once
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "structs.h"

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* Parse result: what the rest of the program needs to know. */
enum parse_verdict {
	PARSE_OK = 0,
	PARSE_NOT_IP,        /* non-IP ethertype */
	PARSE_MALFORMED,     /* L2/L3 header the parser cannot trust */
	PARSE_VRRP,          /* IP protocol 112 */
	PARSE_IPV6_EXT,      /* IPv6 next header is not TCP/UDP */
	PARSE_FRAGMENT,      /* IPv4 fragment (first or later) */
	PARSE_NOT_L4,        /* IP protocol we do not balance (ICMP, ...) */
	PARSE_L4_TRUNCATED,  /* TCP/UDP header runs past the IP payload or the frame */
	PARSE_V4_MAPPED,     /* IPv6 to ::ffff:a.b.c.d, which would alias an IPv4 VIP's key */
};

struct packet {
	struct flow_key flow;
	__u32 l3_off;
	__be16 l3_proto; /* EtherType after at most one VLAN tag */
	__u8 not_unicast;
};

/* 0 when the IPv6 next header is an extension header we would have to walk. */
static __always_inline int ipv6_is_ext(__u8 nh)
{
	switch (nh) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_FRAGMENT:
	case IPPROTO_ESP:
	case IPPROTO_AH:
	case IPPROTO_DSTOPTS:
	case 135: /* mobility */
	case 139: /* HIP */
	case 140: /* shim6 */
		return 1;
	}
	return 0;
}

/* Reads the ports of a TCP/UDP header at l4 whose IP payload ends at l4_end. */
static __always_inline int parse_ports(struct packet *p, void *l4, void *l4_end, void *data_end)
{
	__u32 min = p->flow.proto == IPPROTO_TCP ? 20 : 8;

	if (l4 + min > data_end || l4 + min > l4_end)
		return PARSE_L4_TRUNCATED;
	if (l4 + 4 > data_end) /* for the verifier: min >= 8 already covers it */
		return PARSE_L4_TRUNCATED;
	__builtin_memcpy(&p->flow.sport, l4, 2);
	__builtin_memcpy(&p->flow.dport, l4 + 2, 2);
	return PARSE_OK;
}

static __always_inline int parse_ipv4(struct packet *p, void *data, void *data_end)
{
	struct iphdr *ip = data + p->l3_off;
	__u32 hlen, tot;

	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (tot < hlen || (void *)ip + tot > data_end)
		return PARSE_MALFORMED;
	if ((void *)ip + hlen > data_end)
		return PARSE_MALFORMED;

	/* v4-mapped addresses: ::ffff:a.b.c.d */
	__builtin_memset(p->flow.src, 0, 10);
	__builtin_memset(p->flow.dst, 0, 10);
	p->flow.src[10] = p->flow.src[11] = 0xff;
	p->flow.dst[10] = p->flow.dst[11] = 0xff;
	__builtin_memcpy(&p->flow.src[12], &ip->saddr, 4);
	__builtin_memcpy(&p->flow.dst[12], &ip->daddr, 4);
	p->flow.proto = ip->protocol;

	if (ip->protocol == PROTO_VRRP)
		return PARSE_VRRP;
	/* MF set or a non-zero offset: later fragments carry no ports at all, and the first one's
	 * ports would send the rest of the datagram elsewhere. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return PARSE_FRAGMENT;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return PARSE_NOT_L4;
	return parse_ports(p, (void *)ip + (hlen & 0x3c), (void *)ip + tot, data_end);
}

static __always_inline int parse_ipv6(struct packet *p, void *data, void *data_end)
{
	struct ipv6hdr *ip6 = data + p->l3_off;
	void *payload = ip6 + 1;

	if (payload > data_end)
		return PARSE_MALFORMED;
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	if (payload + bpf_ntohs(ip6->payload_len) > data_end)
		return PARSE_MALFORMED;

	__builtin_memcpy(p->flow.src, &ip6->saddr, 16);
	__builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
	p->flow.proto = ip6->nexthdr;

	/* v4-mapped destinations (RFC 4291 2.5.5.2) never appear on the wire, and maps key IPv4 VIPs
	 * that way: such a packet must not reach an IPv4 service. */
	if (ip6->daddr.in6_u.u6_addr32[0] == 0 && ip6->daddr.in6_u.u6_addr32[1] == 0 &&
	    ip6->daddr.in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff))
		return PARSE_V4_MAPPED;

	if (ip6->nexthdr == PROTO_VRRP)
		return PARSE_VRRP;
	if (ipv6_is_ext(ip6->nexthdr))
		return PARSE_IPV6_EXT;
	if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
		return PARSE_NOT_L4;
	return parse_ports(p, payload, payload + bpf_ntohs(ip6->payload_len), data_end);
}

static __always_inline int parse_packet(struct packet *p, void *data, void *data_end)
{
	struct ethhdr *eth = data;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	p->l3_off = sizeof(*eth);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return PARSE_MALFORMED;
		proto = vh->proto;
		p->l3_off += sizeof(*vh);
	}
	p->not_unicast = eth->h_dest[0] & 1;
	p->l3_proto = proto;

	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(p, data, data_end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(p, data, data_end);
	/* ARP, a second VLAN tag (QinQ), LLDP, ...: not ours. */
	return PARSE_NOT_IP;
}
