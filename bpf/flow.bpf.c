// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * flow.bpf.c - the network flow sensor.
 *
 * detect_flow_ingress / detect_flow_egress (TC, clsact) count every IPv4/IPv6 packet of a
 * watched interface into a per-flow entry of a hash keyed by the normalised 5-tuple (the
 * lower address/port pair first), so both directions of a connection land in one entry; "src" is
 * the side of the first packet seen. Counts change only under the entry's spin lock, and an
 * export copies and zeroes them under the same lock, so every packet is in exactly one record.
 *
 * A record (struct detect_flow, records.h) leaves through the ring:
 *   - at a TCP end: RST, or FIN both ways and then the last ACK (on that packet);
 *   - on the first packet after the idle timeout (IDLE), or when the active timeout has run
 *     since the first packet of the slice (ACTIVE, IPFIX-style: long flows report periodically);
 *   - from detect_flow_sweep, which the agent runs (BPF_PROG_TEST_RUN) every second or so: the
 *     same timeouts for flows that sent nothing since, entries removed once idle, and, when the
 *     table is near full, idle flows exported as EVICTED and removed to make room. The table
 *     is a plain hash (LRU maps cannot hold a spin lock, and LRU eviction is silent): when it is
 *     full anyway, a new flow's packets are counted as uncounted (struct detect_flow_counters).
 * If the ring is full the counts go back into the entry and the sweep retries: nothing is lost
 * to a full ring, and nothing is counted twice.
 *
 * Process attribution: egress packets carry their socket (bpf_get_socket_cookie, and
 * bpf_skb_cgroup_id); the owner of a socket (tgid, cgroup) is recorded when a TCP connect starts
 * (tp_btf/inet_sock_set_state -> SYN_SENT, in the connecting process) and, for the cgroups the
 * agent names, at connect()/sendmsg() (cgroup sock_addr hooks, which also cover UDP).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "records.h"
#include "flow.h"

#define ETH_HLEN      14
#define ETH_P_IP      0x0800
#define ETH_P_IPV6    0x86DD
#define TC_ACT_UNSPEC (-1)

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

#define NS_PER_SEC 1000000000ULL
#define E2BIG 7
#define IPPROTO_ICMPV6 58

const volatile struct detect_flow_config flow_config = {
	.idle_timeout_ns = 15 * NS_PER_SEC,
	.active_timeout_ns = 60 * NS_PER_SEC,
	.tcp_linger_ns = 2 * NS_PER_SEC,
	.pressure_idle_ns = 1 * NS_PER_SEC,
	.max_flows = 65536,
	.pressure_permille = 900,
};

/* Normalised 5-tuple: (a, port_a) <= (b, port_b). The interface is part of the key: a flow
 * seen on two watched interfaces is two records. */
struct flow_key {
	__u32 ifindex;
	__u8  family;
	__u8  protocol;
	__u16 pad0;
	__u64 a[2];
	__u64 b[2];
	__u16 port_a;
	__u16 port_b;
};

#define FS_SRC_IS_B 0x01 /* the first packet went b -> a */
#define FS_CLOSING  0x02 /* FIN seen both ways: the next ACK from the other side ends the flow */
#define FS_CLOSED   0x04 /* the TCP connection ended; later packets are strays */
#define FS_RESTART  0x08 /* exported at its end (TCP end, idle): the next packet starts a new flow */
#define FS_DEAD     0x10 /* the sweep is removing the entry: do not count into it */

struct flow_state {
	struct bpf_spin_lock lock;
	__u8  flags;          /* FS_* */
	__u8  direction;      /* enum detect_flow_direction */
	__u8  fin_mask;       /* bit per side that sent a FIN */
	__u8  last_fin_side;
	__u8  tcp_flags;      /* OR since the last export */
	__u8  owner_tries;    /* egress packets that looked the owner up (bounded) */
	__u16 icmp;           /* ICMP: type << 8 | code of the first packet */
	__u32 pid;
	__u64 cookie;
	__u64 cgroup_id;
	__u64 first_ns;       /* first packet of the unexported slice; 0: nothing pending */
	__u64 last_ns;        /* last packet seen */
	__u64 packets[2];     /* by side since the last export: [0] a -> b, [1] b -> a */
	__u64 bytes[2];
	__u32 syn;
	__u32 fin;
	__u32 rst;
	__u32 pad0;
};

/* What an export takes out of an entry (copied under the lock, written to the ring after). */
struct flow_export {
	__u64 first_ns;
	__u64 last_ns;
	__u64 packets[2];
	__u64 bytes[2];
	__u64 cookie;
	__u64 cgroup_id;
	__u32 syn;
	__u32 fin;
	__u32 rst;
	__u32 pid;
	__u16 icmp;
	__u8  flags;
	__u8  direction;
	__u8  tcp_flags;
	__u8  reason;         /* enum detect_flow_reason; 0: nothing to export */
	__u8  pad0[2];
};

struct sock_owner {
	__u32 tgid;
	__u32 pad0;
	__u64 cgroup_id;
};

/* A plain hash, not LRU: LRU maps cannot hold a spin lock, and their eviction is silent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
} detect_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} detect_flow_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct detect_flow_counters);
} detect_flow_stats SEC(".maps");

/* socket cookie -> owner, written where the kernel runs in the owner's context. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sock_owner);
} detect_sock_owners SEC(".maps");

/* One parsed packet. Addresses in network order, ports in host order. */
struct pkt {
	__u64 saddr[2];
	__u64 daddr[2];
	__u32 l3_bytes;       /* every segment's L3 bytes */
	__u32 segs;           /* segments (GSO/GRO packets carry several) */
	__u16 sport;
	__u16 dport;
	__u16 icmp;
	__u8  family;
	__u8  protocol;
	__u8  tcp_flags;
	__u8  side;           /* 0: a -> b (a is the lower address/port), 1: b -> a */
	__u8  egress;
	__u8  pad0[5];
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IP = 1,
	PARSE_TRUNCATED = 2,
};

static __always_inline struct detect_flow_counters *flow_counters(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&detect_flow_stats, &zero);
}

/* Headers to read: Ethernet, IPv6 with up to 3 extension headers of at most 64 bytes, TCP. */
#define PULL_LEN (ETH_HLEN + 40 + 3 * 64 + 60)

/* Ports, flags and ICMP identity from the L4 header at l4 (hdr_len: bytes before it from L3). */
static __always_inline int parse_l4(struct pkt *p, void *l4, void *end, __u32 *l4_hdr)
{
	if (p->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > end)
			return PARSE_TRUNCATED;
		p->sport = bpf_ntohs(tcp->source);
		p->dport = bpf_ntohs(tcp->dest);
		p->tcp_flags = ((__u8 *)tcp)[13];
		*l4_hdr = tcp->doff * 4;
	} else if (p->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > end)
			return PARSE_TRUNCATED;
		p->sport = bpf_ntohs(udp->source);
		p->dport = bpf_ntohs(udp->dest);
		*l4_hdr = sizeof(*udp);
	} else if (p->protocol == IPPROTO_ICMP || p->protocol == IPPROTO_ICMPV6) {
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > end)
			return PARSE_TRUNCATED;
		__u8 type = icmp[0];
		p->icmp = ((__u16)type << 8) | icmp[1];
		/* Echo request and reply share their identifier: one flow for a ping. */
		if (type == 0 || type == 8 || type == 128 || type == 129) {
			__u16 id = ((__u16)icmp[4] << 8) | icmp[5];
			p->sport = id;
			p->dport = id;
		}
		*l4_hdr = 8;
	}
	return PARSE_OK;
}

/* Parses the headers in the skb's linear area; PARSE_TRUNCATED when they are not all there. */
static __noinline int parse_linear(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 l4_hdr = 0, l3_hdr;

	p->segs = skb->gso_segs > 1 ? skb->gso_segs : 1;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > end)
			return PARSE_TRUNCATED;
		l3_hdr = ip->ihl * 4;
		if (l3_hdr < sizeof(*ip))
			return PARSE_TRUNCATED;
		p->family = 4;
		p->protocol = ip->protocol;
		p->saddr[0] = ip->saddr;
		p->daddr[0] = ip->daddr;
		p->l3_bytes = bpf_ntohs(ip->tot_len);
		/* Fragments after the first have no L4 header: they count as port 0 <-> 0. */
		if (!(ip->frag_off & bpf_htons(0x1fff))) {
			void *l4 = (void *)ip + l3_hdr;
			if (l4 > end)
				return PARSE_TRUNCATED;
			if (parse_l4(p, l4, end, &l4_hdr))
				return PARSE_TRUNCATED;
		}
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > end)
			return PARSE_TRUNCATED;
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		p->l3_bytes = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__u8 next = ip6->nexthdr;
		void *cur = (void *)(ip6 + 1);
		bool l4 = true;
#pragma unroll
		for (int i = 0; i < 3; i++) {
			if (next != 0 && next != 43 && next != 44 && next != 51 && next != 60)
				break;
			__u8 *ext = cur;
			if ((void *)(ext + 8) > end)
				return PARSE_TRUNCATED;
			__u32 len;
			if (next == 44) { /* fragment: only the first carries the L4 header */
				if ((((__u16)ext[2] << 8 | ext[3]) & 0xfff8) != 0)
					l4 = false;
				len = 8;
			} else if (next == 51) {
				len = ((__u32)ext[1] + 2) * 4;
			} else {
				len = ((__u32)ext[1] + 1) * 8;
			}
			next = ext[0];
			cur += len & 0x1ff;
		}
		l3_hdr = cur - (void *)ip6;
		p->protocol = next;
		if (l4 && l3_hdr <= 40 + 3 * 512) {
			if (cur > end)
				return PARSE_TRUNCATED;
			if (parse_l4(p, cur, end, &l4_hdr))
				return PARSE_TRUNCATED;
		}
	} else {
		return PARSE_NOT_IP;
	}
	if (p->segs > 1) {
		/* A GSO/GRO packet: every segment repeats the headers the skb holds once. */
		__u32 hdr = (l3_hdr + l4_hdr) & 0xffff;
		p->l3_bytes = skb->len - ETH_HLEN + (p->segs - 1) * hdr;
	}
	return PARSE_OK;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	int r = parse_linear(skb, p);
	if (r == PARSE_TRUNCATED && skb->len > skb->data_end - skb->data) {
		/* Headers partly in paged data: pull them into the linear area once and parse again.
		 * Only then: pulling costs a copy, and may reallocate a GSO packet's head. */
		if (bpf_skb_pull_data(skb, skb->len < PULL_LEN ? skb->len : PULL_LEN) == 0) {
			__builtin_memset(p, 0, sizeof(*p));
			r = parse_linear(skb, p);
		}
	}
	return r;
}

static __always_inline void zero_counts(struct flow_state *st)
{
	st->first_ns = 0;
	st->packets[0] = 0;
	st->packets[1] = 0;
	st->bytes[0] = 0;
	st->bytes[1] = 0;
	st->syn = 0;
	st->fin = 0;
	st->rst = 0;
	st->tcp_flags = 0;
}

/* Under the lock: copy the pending counts out and zero them. */
static __always_inline void take(struct flow_state *st, struct flow_export *ex, __u8 reason)
{
	ex->first_ns = st->first_ns;
	ex->last_ns = st->last_ns;
	ex->packets[0] = st->packets[0];
	ex->packets[1] = st->packets[1];
	ex->bytes[0] = st->bytes[0];
	ex->bytes[1] = st->bytes[1];
	ex->cookie = st->cookie;
	ex->cgroup_id = st->cgroup_id;
	ex->syn = st->syn;
	ex->fin = st->fin;
	ex->rst = st->rst;
	ex->pid = st->pid;
	ex->icmp = st->icmp;
	ex->flags = st->flags;
	ex->direction = st->direction;
	ex->tcp_flags = st->tcp_flags;
	ex->reason = reason;
	zero_counts(st);
}

/* Under the lock: an export the ring could not take goes back into the entry. */
static __always_inline void give_back(struct flow_state *st, struct flow_export *ex)
{
	if (st->first_ns == 0 || ex->first_ns < st->first_ns)
		st->first_ns = ex->first_ns;
	st->packets[0] += ex->packets[0];
	st->packets[1] += ex->packets[1];
	st->bytes[0] += ex->bytes[0];
	st->bytes[1] += ex->bytes[1];
	st->syn += ex->syn;
	st->fin += ex->fin;
	st->rst += ex->rst;
	st->tcp_flags |= ex->tcp_flags;
	if (ex->reason == DETECT_FLOW_END_TCP)
		st->flags |= FS_CLOSED;
	st->flags &= ~FS_RESTART;
}

/* Writes one record; false when the ring is full. Out of line: rare next to counting. */
static __noinline bool emit(const struct flow_key *key, const struct flow_export *ex,
				 struct detect_flow_counters *c, __u64 now)
{
	struct detect_flow *r = bpf_ringbuf_reserve(&detect_flow_events, sizeof(*r), 0);
	if (!r) {
		if (c)
			c->ring_full++;
		return false;
	}
	int src = ex->flags & FS_SRC_IS_B ? 1 : 0;
	r->hdr.magic = DETECT_RECORD_MAGIC;
	r->hdr.version = DETECT_FORMAT_VERSION;
	r->hdr.type = DETECT_REC_FLOW;
	r->hdr.length = sizeof(*r);
	r->hdr.cpu = (__u16)bpf_get_smp_processor_id();
	r->hdr.ktime_ns = now;
	r->family = key->family;
	r->protocol = key->protocol;
	r->direction = ex->direction;
	r->reason = ex->reason;
	r->ifindex = key->ifindex;
	__u64 *s = (__u64 *)r->saddr, *d = (__u64 *)r->daddr;
	if (src) {
		s[0] = key->b[0]; s[1] = key->b[1];
		d[0] = key->a[0]; d[1] = key->a[1];
		r->sport = key->port_b;
		r->dport = key->port_a;
	} else {
		s[0] = key->a[0]; s[1] = key->a[1];
		d[0] = key->b[0]; d[1] = key->b[1];
		r->sport = key->port_a;
		r->dport = key->port_b;
	}
	if (key->protocol == IPPROTO_ICMP || key->protocol == IPPROTO_ICMPV6) {
		r->sport = ex->icmp;
		r->dport = key->port_a; /* echo identifier, 0 for other messages */
	}
	r->tcp_flags = ex->tcp_flags;
	r->pad0[0] = r->pad0[1] = r->pad0[2] = 0;
	r->first_ns = ex->first_ns;
	r->last_ns = ex->last_ns;
	r->packets_fwd = ex->packets[src];
	r->bytes_fwd = ex->bytes[src];
	r->packets_rev = ex->packets[src ^ 1];
	r->bytes_rev = ex->bytes[src ^ 1];
	r->syn_count = ex->syn;
	r->fin_count = ex->fin;
	r->rst_count = ex->rst;
	r->pid = ex->pid;
	r->socket_cookie = ex->cookie;
	r->cgroup_id = ex->cgroup_id;
	bpf_ringbuf_submit(r, 0);
	if (c) {
		c->records++;
		c->exported_packets += ex->packets[0] + ex->packets[1];
		c->exported_bytes += ex->bytes[0] + ex->bytes[1];
	}
	return true;
}

/* Exports what take() took from st; if the ring is full the counts go back into st. */
static __noinline void export_or_give_back(const struct flow_key *key, struct flow_state *st, struct flow_export *ex,
					   struct detect_flow_counters *c, __u64 now)
{
	if (emit(key, ex, c, now))
		return;
	bpf_spin_lock(&st->lock);
	give_back(st, ex);
	bpf_spin_unlock(&st->lock);
}

/* Starts a new flow in st from this packet's side. */
static __always_inline void restart(struct flow_state *st, const struct pkt *p, int side, bool egress)
{
	st->flags = side ? FS_SRC_IS_B : 0;
	st->direction = egress ? DETECT_FLOW_DIR_EGRESS : DETECT_FLOW_DIR_INGRESS;
	st->fin_mask = 0;
	st->last_fin_side = 0;
	st->owner_tries = 0;
	st->icmp = p->icmp;
	st->pid = 0;
	st->cookie = 0;
	st->cgroup_id = 0;
}

/* Under the lock: counts one packet; returns the reason to export now (0: none). */
static __always_inline __u8 count(struct flow_state *st, const struct pkt *p, int side, __u64 now)
{
	__u8 f = p->tcp_flags;
	st->packets[side & 1] += p->segs;
	st->bytes[side & 1] += p->l3_bytes;
	if (st->first_ns == 0)
		st->first_ns = now;
	if ((__s64)(now - st->last_ns) > 0)
		st->last_ns = now;
	if (p->protocol != IPPROTO_TCP)
		return 0;
	st->tcp_flags |= f;
	st->syn += (f & TCPF_SYN) ? 1 : 0;
	st->fin += (f & TCPF_FIN) ? 1 : 0;
	st->rst += (f & TCPF_RST) ? 1 : 0;
	if (st->flags & FS_CLOSED)
		return 0; /* strays after the end: the sweep exports them */
	if (f & TCPF_RST)
		return DETECT_FLOW_END_TCP;
	if (f & TCPF_FIN) {
		st->fin_mask |= 1 << (side & 1);
		st->last_fin_side = side;
		if (st->fin_mask == 3)
			st->flags |= FS_CLOSING;
		return 0;
	}
	if ((st->flags & FS_CLOSING) && side != st->last_fin_side && (f & TCPF_ACK))
		return DETECT_FLOW_END_TCP;
	return 0;
}

/* Who owns an egress packet's socket, as far as the kernel told us. */
struct owner_info {
	__u64 cookie;
	__u64 cgroup_id;
	__u32 tgid;
	__u32 looked;         /* 1 once looked up for this packet */
};

static __noinline void find_owner(struct __sk_buff *skb, struct owner_info *o, struct detect_flow_counters *c)
{
	o->looked = 1;
	o->cookie = bpf_get_socket_cookie(skb);
	if (!o->cookie)
		return;
	c->owner_lookups++;
	struct sock_owner *known = bpf_map_lookup_elem(&detect_sock_owners, &o->cookie);
	if (known) {
		o->tgid = known->tgid;
		o->cgroup_id = known->cgroup_id;
		c->owner_found++;
	} else {
		o->cgroup_id = bpf_skb_cgroup_id(skb);
	}
}

/* A new flow's entry, counting its first packet. Returns bpf_map_update_elem's result. */
static __noinline long insert_flow(const struct flow_key *key, const struct pkt *p, const struct owner_info *o, __u64 now)
{
	struct flow_state init = {};
	int side = p->side & 1;
	restart(&init, p, side, p->egress);
	init.cookie = o->cookie;
	init.pid = o->tgid;
	init.cgroup_id = o->cgroup_id;
	init.owner_tries = o->looked;
	init.last_ns = now;
	if (count(&init, p, side, now) == DETECT_FLOW_END_TCP)
		init.flags |= FS_CLOSED; /* a lone RST: the sweep exports it */
	return bpf_map_update_elem(&detect_flows, key, &init, BPF_NOEXIST);
}

static __always_inline int handle(struct __sk_buff *skb, bool egress)
{
	struct detect_flow_counters *c = flow_counters();
	struct pkt p = {};
	struct flow_key key = {};
	struct flow_export ex = {};
	struct owner_info owner = {};
	struct flow_state *st = NULL;
	bool counted = false;

	if (!c)
		return TC_ACT_UNSPEC;
	int r = parse(skb, &p);
	if (r != PARSE_OK) {
		if (r == PARSE_NOT_IP)
			c->not_ip++;
		else
			c->truncated++;
		return TC_ACT_UNSPEC;
	}

	/* Normalise: the lower (address, port) is a. */
	key.ifindex = skb->ifindex;
	key.family = p.family;
	key.protocol = p.protocol;
	bool swap;
	if (p.saddr[0] != p.daddr[0])
		swap = p.saddr[0] > p.daddr[0];
	else if (p.saddr[1] != p.daddr[1])
		swap = p.saddr[1] > p.daddr[1];
	else
		swap = p.sport > p.dport;
	if (swap) {
		key.a[0] = p.daddr[0]; key.a[1] = p.daddr[1];
		key.b[0] = p.saddr[0]; key.b[1] = p.saddr[1];
		key.port_a = p.dport;
		key.port_b = p.sport;
	} else {
		key.a[0] = p.saddr[0]; key.a[1] = p.saddr[1];
		key.b[0] = p.daddr[0]; key.b[1] = p.daddr[1];
		key.port_a = p.sport;
		key.port_b = p.dport;
	}
	p.side = swap ? 1 : 0;
	p.egress = egress ? 1 : 0;
	int side = p.side;

	__u64 now = bpf_ktime_get_boot_ns();
	c->skbs++;
	c->packets += p.segs;
	c->bytes += p.l3_bytes;

#pragma clang loop unroll(disable)
	for (int attempt = 0; attempt < 2; attempt++) {
		st = bpf_map_lookup_elem(&detect_flows, &key);
		if (egress && !owner.looked && (!st || (!st->pid && st->owner_tries < 4)))
			find_owner(skb, &owner, c); /* outside the lock: helpers may not run under it */
		if (!st) {
			long err = insert_flow(&key, &p, &owner, now);
			if (err == 0) {
				c->flows_created++;
				counted = true;
				break;
			}
			if (err == -E2BIG) { /* the table is full: counted, not hidden */
				c->table_full++;
				break;
			}
			st = bpf_map_lookup_elem(&detect_flows, &key); /* another CPU inserted it first */
			if (!st)
				continue;
		}

		bpf_spin_lock(&st->lock);
		if (st->flags & FS_DEAD) {
			bpf_spin_unlock(&st->lock);
			bpf_map_delete_elem(&detect_flows, &key);
			st = NULL;
			continue;
		}
		bool pending = st->first_ns != 0;
		__u8 f = p.tcp_flags;
		bool new_conn = p.protocol == IPPROTO_TCP && (f & TCPF_SYN) && !(f & TCPF_ACK) &&
				(st->flags & (FS_CLOSED | FS_CLOSING));
		if (pending && (new_conn || (__s64)(now - st->last_ns) >= (__s64)flow_config.idle_timeout_ns)) {
			take(st, &ex, new_conn ? DETECT_FLOW_END_TCP : DETECT_FLOW_END_IDLE);
			st->flags |= FS_RESTART;
		}
		if (new_conn || (st->flags & FS_RESTART))
			restart(st, &p, side, egress);
		if (owner.looked) {
			st->owner_tries++;
			if (!st->cookie)
				st->cookie = owner.cookie;
			if (!st->pid)
				st->pid = owner.tgid;
			if (!st->cgroup_id)
				st->cgroup_id = owner.cgroup_id;
		}
		__u8 end = count(st, &p, side, now);
		if (!ex.reason) {
			if (end) {
				take(st, &ex, end);
				st->flags = (st->flags | FS_CLOSED | FS_RESTART) & ~FS_CLOSING;
			} else if ((__s64)(now - st->first_ns) >= (__s64)flow_config.active_timeout_ns) {
				take(st, &ex, DETECT_FLOW_END_ACTIVE);
			}
		} else if (end) {
			st->flags = (st->flags | FS_CLOSED) & ~FS_CLOSING; /* exported by the sweep */
		}
		bpf_spin_unlock(&st->lock);
		counted = true;
		break;
	}
	if (ex.reason && st)
		export_or_give_back(&key, st, &ex, c, now);
	if (!counted) {
		c->uncounted_packets += p.segs;
		c->uncounted_bytes += p.l3_bytes;
	}
	return TC_ACT_UNSPEC;
}

SEC("tc")
int detect_flow_ingress(struct __sk_buff *skb)
{
	return handle(skb, false);
}

SEC("tc")
int detect_flow_egress(struct __sk_buff *skb)
{
	return handle(skb, true);
}

/* Does nothing: `detect bench flows` attaches it where the sensor goes to measure what BPF
 * run-time statistics cost by themselves (two clock reads per run, the dispatch): the floor
 * under the sensor's own figure. Never attached by the agent. */
SEC("tc")
int detect_flow_floor(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

/* ---- the sweep ------------------------------------------------------------------------- */

struct sweep_ctx {
	struct detect_flow_sweep out;
	__u64 now;
	__u64 entries_before;  /* counted by the first pass */
	bool pressure;
	bool flush;
};

static long sweep_count(struct bpf_map *map, struct flow_key *key, struct flow_state *st, struct sweep_ctx *sc)
{
	sc->entries_before++;
	return 0;
}

static long sweep_one(struct bpf_map *map, struct flow_key *key, struct flow_state *st, struct sweep_ctx *sc)
{
	struct flow_export ex = {};
	struct detect_flow_counters *c = flow_counters();
	__u64 now = sc->now;
	bool remove = false;

	sc->out.entries++;
	bpf_spin_lock(&st->lock);
	if (st->flags & FS_DEAD) {
		bpf_spin_unlock(&st->lock);
		return 0;
	}
	__s64 idle_for = (__s64)(now - st->last_ns);
	if (idle_for < 0)
		idle_for = 0;
	if (st->first_ns != 0) {
		__u8 reason = 0;
		if (sc->flush)
			reason = DETECT_FLOW_END_FLUSH;
		else if ((st->flags & FS_CLOSED) && idle_for >= (__s64)flow_config.tcp_linger_ns)
			reason = DETECT_FLOW_END_TCP;
		else if (idle_for >= (__s64)flow_config.idle_timeout_ns)
			reason = DETECT_FLOW_END_IDLE;
		else if ((__s64)(now - st->first_ns) >= (__s64)flow_config.active_timeout_ns)
			reason = DETECT_FLOW_END_ACTIVE;
		else if (sc->pressure && idle_for >= (__s64)flow_config.pressure_idle_ns)
			reason = DETECT_FLOW_END_EVICTED;
		if (reason) {
			take(st, &ex, reason);
			if (reason == DETECT_FLOW_END_TCP || reason == DETECT_FLOW_END_IDLE)
				st->flags |= FS_RESTART;
		}
	} else if (idle_for >= (__s64)((st->flags & FS_CLOSED) ? flow_config.tcp_linger_ns : flow_config.idle_timeout_ns)) {
		/* Nothing pending and quiet: remove it (marked first, so no packet counts into it). */
		st->flags |= FS_DEAD;
		remove = true;
	}
	bpf_spin_unlock(&st->lock);

	if (ex.reason) {
		if (emit(key, &ex, c, now)) {
			sc->out.exported++;
			if (ex.reason == DETECT_FLOW_END_EVICTED) {
				sc->out.evicted++;
				/* Exported: remove it unless a packet came in meanwhile. */
				bpf_spin_lock(&st->lock);
				if (st->first_ns == 0) {
					st->flags |= FS_DEAD;
					remove = true;
				}
				bpf_spin_unlock(&st->lock);
			}
		} else {
			sc->out.ring_full++;
			bpf_spin_lock(&st->lock);
			give_back(st, &ex);
			bpf_spin_unlock(&st->lock);
		}
	}
	if (remove) {
		bpf_map_delete_elem(map, key);
		sc->out.deleted++;
		if (c)
			c->flows_deleted++;
		return 0;
	}
	if (st->first_ns != 0) { /* racy read: a snapshot for the conservation check */
		sc->out.pending_flows++;
		sc->out.pending_packets += st->packets[0] + st->packets[1];
		sc->out.pending_bytes += st->bytes[0] + st->bytes[1];
	}
	return 0;
}

/* Run by the agent with BPF_PROG_TEST_RUN, never attached (see struct detect_flow_sweep). */
SEC("tc")
int detect_flow_sweep(struct __sk_buff *skb)
{
	struct sweep_ctx sc = {};
	struct detect_flow_counters *c = flow_counters();

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &sc.out, sizeof(sc.out)) < 0)
		return 1;
	/* The result fields arrive as zeros from user space and are counted up from there: loaded
	 * from the packet, they are unknown to the verifier, so the callback loop converges (a
	 * counter starting from a constant would be walked one value at a time). */
	sc.entries_before = sc.out.entries;
	sc.now = bpf_ktime_get_boot_ns();
	sc.flush = sc.out.flags & DETECT_FLOW_SWEEP_F_FLUSH;
	sc.out.now_ns = sc.now;
	bpf_for_each_map_elem(&detect_flows, sweep_count, &sc, 0);
	sc.pressure = flow_config.max_flows &&
		      sc.entries_before * 1000 >= (__u64)flow_config.max_flows * flow_config.pressure_permille;
	bpf_for_each_map_elem(&detect_flows, sweep_one, &sc, 0);
	if (c)
		c->sweeps++;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &sc.out, sizeof(sc.out), 0) < 0)
		return 1;
	return 0;
}

/* ---- process attribution ---------------------------------------------------------------- */

static __always_inline void remember_owner(__u64 cookie)
{
	if (!cookie)
		return;
	struct sock_owner o = {
		.tgid = bpf_get_current_pid_tgid() >> 32,
		.cgroup_id = bpf_get_current_cgroup_id(),
	};
	bpf_map_update_elem(&detect_sock_owners, &cookie, &o, BPF_ANY);
}

/* A TCP connect enters SYN_SENT in the connecting process: its tgid and cgroup own the socket. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(detect_flow_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (newstate == TCP_SYN_SENT)
		remember_owner(bpf_get_socket_cookie((void *)sk));
	return 0;
}

/* cgroup sock_addr hooks, attached to the cgroups the agent names (never the root cgroup in
 * tests): connect() and unconnected sendmsg() of TCP and UDP sockets. They never refuse. */
SEC("cgroup/connect4")
int detect_flow_connect4(struct bpf_sock_addr *ctx)
{
	remember_owner(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/connect6")
int detect_flow_connect6(struct bpf_sock_addr *ctx)
{
	remember_owner(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/sendmsg4")
int detect_flow_sendmsg4(struct bpf_sock_addr *ctx)
{
	remember_owner(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/sendmsg6")
int detect_flow_sendmsg6(struct bpf_sock_addr *ctx)
{
	remember_owner(bpf_get_socket_cookie(ctx));
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
