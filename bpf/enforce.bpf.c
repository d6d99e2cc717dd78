// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * enforce.bpf.c - enforcement: drop blocked sources (XDP), deny connects to blocked
 * destinations (cgroup sock_addr), kill listed processes (tp_btf/sys_enter + bpf_send_signal).
 * Every map is pinned by name under the agent's pin root (/sys/fs/bpf/detect by default), so the
 * lists outlive the agent and `detect block` edits them from another process; the agent pins
 * the links too, so the programs keep enforcing while it restarts. enforce.h is the contract.
 *
 * An entry acts while it has not expired (expires_ns, CLOCK_BOOTTIME; the agent sweeps expired
 * entries away, but an expired entry never acts even if no sweep ran). An allowlisted address
 * is never dropped nor denied. Dry-run entries count their hits and let the packet/call pass.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "enforce.h"

#define ETH_P_IP    0x0800
#define ETH_P_IPV6  0x86DD
#define SIGKILL     9
#define TICK_NS     10000000ULL /* USER_HZ = 100: /proc/PID/stat start times are in 10 ms ticks */

#define PINNED __uint(pinning, LIBBPF_PIN_BY_NAME)

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct detect_lpm_v4);
	__type(value, struct detect_enforce_entry);
	PINNED;
} detect_block_src4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct detect_lpm_v6);
	__type(value, struct detect_enforce_entry);
	PINNED;
} detect_block_src6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct detect_lpm_v4);
	__type(value, struct detect_enforce_entry);
	PINNED;
} detect_block_dst4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct detect_lpm_v6);
	__type(value, struct detect_enforce_entry);
	PINNED;
} detect_block_dst6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, struct detect_enforce_entry);
	PINNED;
} detect_block_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct detect_lpm_v4);
	__type(value, struct detect_allow_entry);
	PINNED;
} detect_allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct detect_lpm_v6);
	__type(value, struct detect_allow_entry);
	PINNED;
} detect_allow6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct detect_enforce_reason);
	PINNED;
} detect_enforce_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct detect_enforce_control);
	PINNED;
} detect_enforce_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct detect_enforce_counters);
	PINNED;
} detect_enforce_stats SEC(".maps");

static __always_inline struct detect_enforce_counters *counters(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&detect_enforce_stats, &zero);
}

enum verdict {
	V_PASS = 0,   /* no live entry */
	V_ACT = 1,    /* act: drop, deny, kill */
	V_DRY = 2,    /* a dry-run entry matched */
	V_SPARED = 3, /* an entry matched but expired or allowlisted */
};

/* Decides on a matching entry and counts the hit. */
static __always_inline enum verdict judge(struct detect_enforce_entry *e, bool allowlisted,
					  struct detect_enforce_counters *c)
{
	if (!e)
		return V_PASS;
	__u64 now = bpf_ktime_get_boot_ns();
	if (e->expires_ns && now >= e->expires_ns) {
		if (c)
			c->expired_seen++;
		return V_SPARED;
	}
	if (allowlisted) {
		if (c)
			c->allowlist_overrode++;
		return V_SPARED;
	}
	__sync_fetch_and_add(&e->hits, 1);
	e->last_hit_ns = now;
	return (e->flags & DETECT_ENFORCE_F_DRY_RUN) ? V_DRY : V_ACT;
}

static __always_inline enum verdict judge4(void *block, __u32 addr, struct detect_enforce_counters *c)
{
	struct detect_lpm_v4 key = { .prefixlen = 32 };
	__builtin_memcpy(key.addr, &addr, 4);
	struct detect_enforce_entry *e = bpf_map_lookup_elem(block, &key);
	if (!e)
		return V_PASS;
	return judge(e, bpf_map_lookup_elem(&detect_allow4, &key) != NULL, c);
}

static __always_inline enum verdict judge6(void *block, const __u32 *addr, struct detect_enforce_counters *c)
{
	struct detect_lpm_v6 key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, addr, 16);
	struct detect_enforce_entry *e = bpf_map_lookup_elem(block, &key);
	if (!e)
		return V_PASS;
	return judge(e, bpf_map_lookup_elem(&detect_allow6, &key) != NULL, c);
}

/* ---- drop blocked sources ------------------------------------------------------------------ */

SEC("xdp")
int detect_enforce_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct detect_enforce_counters *c = counters();
	struct ethhdr *eth = data;
	enum verdict v;

	if (!c)
		return XDP_PASS;
	if ((void *)(eth + 1) > end) {
		c->missed_unparsed++;
		return XDP_PASS;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end) {
			c->missed_unparsed++;
			return XDP_PASS;
		}
		c->packets_checked++;
		v = judge4(&detect_block_src4, ip->saddr, c);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end) {
			c->missed_unparsed++;
			return XDP_PASS;
		}
		c->packets_checked++;
		__u32 saddr[4];
		__builtin_memcpy(saddr, &ip6->saddr, 16);
		v = judge6(&detect_block_src6, saddr, c);
	} else {
		return XDP_PASS;
	}
	if (v == V_ACT) {
		c->dropped++;
		return XDP_DROP;
	}
	if (v == V_DRY)
		c->drop_dry_run++;
	return XDP_PASS;
}

/* ---- deny connect()/sendmsg() to blocked destinations ------------------------------------- */

static __always_inline int deny(enum verdict v)
{
	struct detect_enforce_counters *c = counters();
	if (v == V_ACT) {
		if (c)
			c->denied++;
		return 0; /* the call fails with EPERM */
	}
	if (v == V_DRY && c)
		c->deny_dry_run++;
	return 1;
}

static __always_inline int deny4(struct bpf_sock_addr *ctx)
{
	return deny(judge4(&detect_block_dst4, ctx->user_ip4, counters()));
}

static __always_inline int deny6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	return deny(judge6(&detect_block_dst6, addr, counters()));
}

SEC("cgroup/connect4")
int detect_deny_connect4(struct bpf_sock_addr *ctx)
{
	return deny4(ctx);
}

SEC("cgroup/connect6")
int detect_deny_connect6(struct bpf_sock_addr *ctx)
{
	return deny6(ctx);
}

SEC("cgroup/sendmsg4")
int detect_deny_sendmsg4(struct bpf_sock_addr *ctx)
{
	return deny4(ctx);
}

SEC("cgroup/sendmsg6")
int detect_deny_sendmsg6(struct bpf_sock_addr *ctx)
{
	return deny6(ctx);
}

/* ---- kill listed processes ---------------------------------------------------------------- */

SEC("tp_btf/sys_enter")
int BPF_PROG(detect_kill_sys_enter, struct pt_regs *regs, long id)
{
	__u32 zero = 0;
	struct detect_enforce_control *ctl = bpf_map_lookup_elem(&detect_enforce_ctl, &zero);
	if (!ctl || !ctl->kill_armed)
		return 0; /* the common case: one array lookup per syscall */
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct detect_enforce_entry *e = bpf_map_lookup_elem(&detect_block_pid, &tgid);
	if (!e)
		return 0;
	struct detect_enforce_counters *c = counters();
	if (e->start_ticks) {
		struct task_struct *task = bpf_get_current_task_btf();
		if (task->group_leader->start_boottime / TICK_NS != e->start_ticks) {
			if (c)
				c->missed_stale_pid++;
			return 0; /* the pid now belongs to another process */
		}
	}
	enum verdict v = judge(e, false, c);
	if (v == V_DRY) {
		if (c)
			c->kill_dry_run++;
		return 0;
	}
	if (v != V_ACT)
		return 0;
	if (bpf_send_signal(SIGKILL) < 0) {
		if (c)
			c->missed_signal++;
		return 0;
	}
	if (c)
		c->killed++;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
