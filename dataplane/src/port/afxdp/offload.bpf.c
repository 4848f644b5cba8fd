// SPDX-License-Identifier: Apache-2.0
//
// tiergate's XDP program with flow offload (`tiergate run --offload`): frames of
// established connections that userspace installed in `tg_flows` are counted and
// redirected to the other interface here; every other frame goes to the AF_XDP
// socket of its queue, as without offload. See the `afxdp` module docs.
//
// Built by dataplane/build.rs with `clang -O2 -g -target bpf` and loaded with
// libbpf. Self-contained on purpose: no kernel or libbpf headers are needed.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

// include/uapi/linux/bpf.h
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_DEVMAP 14
#define BPF_MAP_TYPE_XSKMAP 17
#define XDP_ABORTED 0
#define XDP_PASS 2
#define XDP_REDIRECT 4

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

// The key of one direction of a connection: the ingress interface, family (4 or
// 6), protocol, addresses (IPv4: the first 4 bytes, the rest 0) and ports as on
// the wire. 44 bytes, no padding; `offload_key` in sys.rs writes the same layout.
struct tg_key {
	__u32 ifindex;
	__u8 family;
	__u8 proto;
	__u16 zero;
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
};

// What userspace installed for that direction, and what this program counted.
// 48 bytes; `OffloadValue` in sys.rs has the same layout.
struct tg_val {
	__u64 packets; // frames forwarded here since installed (atomic add)
	__u64 bytes;   // their lengths (atomic add)
	__u64 last_ns; // bpf_ktime_get_ns() of the latest
	__u32 generation; // policy generation the entry was installed for
	__u32 egress;  // key of tg_tx: the interface to send on
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__u16 rewrite; // 1: set the MACs (router mode)
	__u16 owner;   // the worker that installed it: key of tg_gen
};

// [1] 1 = router mode (non-IP frames to the kernel); [0] unused.
struct tg_cfg {
	__u32 unused;
	__u32 ip_only;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} tg_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tg_key);
	__type(value, struct tg_val);
} tg_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tg_cfg);
} tg_cfg SEC(".maps");

// Per worker, the policy generation it runs: an entry installed for another one is
// stale (its frames go to the worker's socket). Each worker writes only its own.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} tg_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} tg_tx SEC(".maps");

#define ETH_P_IP 0x0008   // network order, read as a little-endian u16
#define ETH_P_IPV6 0xdd86
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

static __attribute__((always_inline)) int to_socket(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tg_xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int tiergate_offload(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct tg_cfg *cfg = bpf_map_lookup_elem(&tg_cfg, &zero);
	if (!cfg)
		return to_socket(ctx);
	__u8 *eth = data;
	if ((void *)(eth + 14) > end)
		return cfg->ip_only ? XDP_PASS : to_socket(ctx);
	__u16 type = *(__u16 *)(eth + 12);
	if (type != ETH_P_IP && type != ETH_P_IPV6)
		return cfg->ip_only ? XDP_PASS : to_socket(ctx);

	struct tg_key key = {};
	key.ifindex = ctx->ingress_ifindex;
	__u8 *l4;
	__u8 *ip = eth + 14;
	if (type == ETH_P_IP) {
		if ((void *)(ip + 20) > end)
			return to_socket(ctx);
		__u32 ihl = (ip[0] & 0x0f) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20)
			return to_socket(ctx);
		// More fragments or an offset: fragments are userspace's.
		if (((ip[6] & 0x3f) | ip[7]) != 0)
			return to_socket(ctx);
		key.family = 4;
		key.proto = ip[9];
		__builtin_memcpy(key.src, ip + 12, 4);
		__builtin_memcpy(key.dst, ip + 16, 4);
		l4 = ip + ihl;
	} else {
		if ((void *)(ip + 40) > end)
			return to_socket(ctx);
		if ((ip[0] >> 4) != 6)
			return to_socket(ctx);
		// Extension headers (and anything but TCP/UDP) are userspace's.
		key.family = 6;
		key.proto = ip[6];
		__builtin_memcpy(key.src, ip + 8, 16);
		__builtin_memcpy(key.dst, ip + 24, 16);
		l4 = ip + 40;
	}
	if (key.proto == IPPROTO_TCP) {
		if ((void *)(l4 + 20) > end)
			return to_socket(ctx);
		// Handshake and teardown go to userspace's conntrack.
		if (l4[13] & (TCP_FIN | TCP_SYN | TCP_RST))
			return to_socket(ctx);
	} else if (key.proto == IPPROTO_UDP) {
		if ((void *)(l4 + 8) > end)
			return to_socket(ctx);
	} else {
		return to_socket(ctx);
	}
	key.sport = *(__u16 *)l4;
	key.dport = *(__u16 *)(l4 + 2);

	struct tg_val *v = bpf_map_lookup_elem(&tg_flows, &key);
	if (!v)
		return to_socket(ctx);
	__u32 owner = v->owner;
	__u32 *gen = bpf_map_lookup_elem(&tg_gen, &owner);
	if (!gen || v->generation != *gen)
		return to_socket(ctx);
	/* Counted only once the redirect is set up: a frame the devmap cannot take goes
	 * to the socket, where the worker counts it. */
	long act = bpf_redirect_map(&tg_tx, v->egress, XDP_ABORTED);
	if (act != XDP_REDIRECT)
		return to_socket(ctx);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, (__u64)(end - data));
	v->last_ns = bpf_ktime_get_ns();
	if (v->rewrite) {
		__builtin_memcpy(eth, v->dst_mac, 6);
		__builtin_memcpy(eth + 6, v->src_mac, 6);
	}
	return act;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
