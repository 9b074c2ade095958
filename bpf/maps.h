/* The maps, pinned under /sys/fs/bpf/xdplb/<iface>/. Names are a contract with bpftool users
 * (docs/maps.md). Sizes here are defaults; the loader sets max_entries from its options. */
#pragma once
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"

/* Virtual services, written by the control plane (CLI or daemon). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct service);
} services SEC(".maps");

/* VIPs that have at least one service: one lookup settles all non-VIP traffic, and tells which
 * fragments are ours to drop. Written by the control plane together with `services`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_SERVICES);
	__type(key, __u8[16]);
	__type(value, struct vip);
} vips SEC(".maps");

/* Real servers by id (0 is never used), written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

/* One Maglev ring: slot -> backend id (0 = none). Created by the control plane, which writes it
 * through a shared mapping (BPF_F_MMAPABLE): one memory copy instead of a syscall that copies
 * 65,537 slots one by one. */
struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, DEFAULT_RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

/* Rings by service id * 2 + slot. The control plane fills the idle slot with a new ring, then
 * flips services.active_slot, so a packet never sees a half-written ring. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DEFAULT_MAX_SERVICES * 2);
	__type(key, __u32);
	__array(values, struct ring);
} maglev SEC(".maps");

/* Established flows -> backend, written by the data path. One common LRU list, not per-CPU ones
 * (BPF_F_NO_COMMON_LRU): per-CPU lists split the size by the CPU count, and a single-queue NIC
 * puts every flow on one CPU, so most of the table would go unused. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_CONNTRACK);
	__type(key, struct flow_key);
	__type(value, struct flow);
} conntrack SEC(".maps");

/* Client -> backend for services with a persistence timeout, written by the data path. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_PERSIST);
	__type(key, struct persist_key);
	__type(value, struct persist_entry);
} persist SEC(".maps");

/* MACs of peer directors (from VRRP and config): their frames were balanced already. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_PEERS);
	__type(key, struct peer_key);
	__type(value, struct peer);
} peers SEC(".maps");

/* Verdict counters (one entry), written by the data path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

/* Traffic per service id, written by the data path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct traffic);
} svc_stats SEC(".maps");

/* Traffic per backend id, written by the data path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct traffic);
} backend_stats SEC(".maps");

/* Layout facts (ring size, hash seed) and the interface's MAC, written by the loader at attach. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct layout);
} meta SEC(".maps");
