/* The flow hash. It depends only on the packet's addresses, ports and protocol and on the seed, so
 * two directors with equal maps and seed pick the same backend for a flow. Murmur3-style 32-bit
 * mixing over the key's words: cheap in BPF, well spread for Maglev's modulo. */
#pragma once
#include <linux/types.h>

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 hash_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 hash_final(__u32 h, __u32 len)
{
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Words are read in host order from network-order bytes; directors sharing a flow table must
 * therefore share an endianness (they always share the program). */
static __always_inline __u32 hash_addr(__u32 h, const __u8 *a)
{
	__u32 w;
#pragma unroll
	for (int i = 0; i < 16; i += 4) {
		__builtin_memcpy(&w, a + i, 4);
		h = hash_mix(h, w);
	}
	return h;
}
