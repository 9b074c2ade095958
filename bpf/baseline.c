//go:build ignore

/* Baselines for `xdplb bench`: what the CPU and the test harness cost without any balancing. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The least an L2 forwarder can do: swap the MACs and send the frame back out. */
SEC("xdp")
int swap_mac_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 tmp[6];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP; /* runt frame: nothing to swap */
	__builtin_memcpy(tmp, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, eth->h_dest, 6);
	__builtin_memcpy(eth->h_dest, tmp, 6);
	return XDP_TX;
}

/* The harness floor, and the program a veth peer needs so native XDP_TX frames are received. */
SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
	return XDP_PASS; /* deliver everything */
}

/* For a receiving veth in throughput tests: count by dropping early. */
SEC("xdp")
int drop_all(struct xdp_md *ctx)
{
	return XDP_DROP; /* sink */
}
