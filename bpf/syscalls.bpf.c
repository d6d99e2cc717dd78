// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * syscalls.bpf.c - the syscall sensor.
 *
 * Records mode: one struct detect_syscall per call, written at sys_exit with the return value;
 * exit and exit_group never return, so they are written at sys_enter with
 * DETECT_SYSCALL_F_NO_RETURN. Summary mode: per-process counts in detect_syscall_counts,
 * one struct detect_syscall_summary per process per interval and when the process exits.
 *
 * tp_btf programs (BTF-typed raw tracepoints): no tracefs, no perf-event buffer copy of the
 * arguments, direct typed access to pt_regs - the cheapest hook on the syscall path here.
 */
#include "common.bpf.h"

#define NR_EXIT       60  /* x86-64 */
#define NR_EXIT_GROUP 231
#define NR_EXECVE     59
#define NR_EXECVEAT   322

#if defined(__TARGET_ARCH_x86)
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_NR(regs) ((regs)->syscallno)
#else
#error "syscall numbers: only x86 and arm64 are supported"
#endif

/* High-volume ring of its own, so a syscall storm cannot crowd out process records. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} detect_syscall_events SEC(".maps");

/* Summary mode: tgid -> counts since the last summary of that process. hdr.ktime_ns holds the
 * time of the last counted call (the agent flushes entries idle for an interval). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct detect_syscall_summary);
} detect_syscall_counts SEC(".maps");

/* Calls summary mode could not count because detect_syscall_counts was full (per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} detect_syscall_uncounted SEC(".maps");

/* Zero value for new detect_syscall_counts entries (too big for the BPF stack). In .bss, so
 * .rodata keeps detect_config as its only variable. */
struct detect_syscall_summary detect_summary_zero;

/* Wake the agent only when the ring crosses this fill level; below it the agent's poll
 * timeout collects the records. One wakeup per 64 KiB instead of one per record. */
#define SYSCALL_WAKEUP_BYTES (64 << 10)
#define RINGBUF_HDR_SZ       8

static __always_inline void emit_syscall(struct task_struct *task, __u64 pid_tgid, __u32 nr, long ret, __u32 flags)
{
	struct detect_syscall *r = bpf_ringbuf_reserve(&detect_syscall_events, sizeof(*r), 0);
	if (!r) {
		detect_count_lost(DETECT_REC_SYSCALL);
		return;
	}
	detect_fill_header(&r->hdr, DETECT_REC_SYSCALL, sizeof(*r), bpf_ktime_get_boot_ns());
	detect_fill_task(&r->task, task, pid_tgid);
	r->ret = ret;
	r->nr = nr;
	r->flags = flags;

	__u64 avail = bpf_ringbuf_query(&detect_syscall_events, BPF_RB_AVAIL_DATA);
	__u64 wake = avail >= SYSCALL_WAKEUP_BYTES && avail < SYSCALL_WAKEUP_BYTES + sizeof(*r) + RINGBUF_HDR_SZ
		? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(r, wake);
}

struct summary_drain {
	struct detect_syscall_summary *live;
	struct detect_syscall_summary *out;
};

/* Moves one count from the live entry to the record; calls counted meanwhile stay live. */
static long summary_move(__u32 i, void *ctx)
{
	struct summary_drain *d = ctx;
	__u64 idx = i;
	/* One register for the bound check and the index: clang would otherwise check a copy and
	 * the verifier would not see the bound on the register used for the access. */
	__asm__ volatile("" : "+r"(idx));
	if (idx >= DETECT_SYSCALL_SLOTS)
		return 1;
	__u32 n = d->live->counts[idx];
	d->out->counts[idx] = n;
	if (n)
		__sync_fetch_and_add(&d->live->counts[idx], -n);
	return 0;
}

/* Writes the counts of one process for [start, now] to the process ring and subtracts them
 * from the live entry. Runs in the process's own context: the task block is refreshed (the
 * comm may have changed with an exec since the entry was made). */
static __always_inline void emit_summary(struct detect_syscall_summary *live, struct task_struct *task,
					 __u64 pid_tgid, __u64 start, __u64 now, __u32 flags)
{
	struct detect_syscall_summary *r = bpf_ringbuf_reserve(&detect_process_events, sizeof(*r), 0);
	if (!r) {
		detect_count_lost(DETECT_REC_SYSCALL_SUMMARY);
		return;
	}
	detect_fill_header(&r->hdr, DETECT_REC_SYSCALL_SUMMARY, sizeof(*r), now);
	detect_fill_task(&r->task, task, pid_tgid);
	r->interval_start_ns = start;
	r->flags = flags;
	r->total = live->total;
	r->failed = live->failed;
	r->other = live->other;
	__sync_fetch_and_add(&live->total, -r->total);
	__sync_fetch_and_add(&live->failed, -r->failed);
	__sync_fetch_and_add(&live->other, -r->other);

	struct summary_drain d = { .live = live, .out = r };
	bpf_loop(DETECT_SYSCALL_SLOTS, summary_move, &d, 0);
	live->task = r->task; /* what the agent's idle flush reports */
	bpf_ringbuf_submit(r, 0);
}

static __always_inline void count_syscall(struct task_struct *task, __u64 pid_tgid, __u32 nr, long ret)
{
	__u32 tgid = pid_tgid >> 32;
	__u64 now = bpf_ktime_get_boot_ns();
	struct detect_syscall_summary *s = bpf_map_lookup_elem(&detect_syscall_counts, &tgid);
	if (!s) {
		bpf_map_update_elem(&detect_syscall_counts, &tgid, &detect_summary_zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&detect_syscall_counts, &tgid);
		if (!s) {
			__u32 zero = 0;
			__u64 *n = bpf_map_lookup_elem(&detect_syscall_uncounted, &zero);
			if (n)
				*n += 1;
			return;
		}
		if (s->interval_start_ns == 0) {
			detect_fill_task(&s->task, task, pid_tgid);
			s->interval_start_ns = now;
		}
	}

	__u64 slot = nr;
	__asm__ volatile("" : "+r"(slot)); /* bound check and index in one register (see summary_move) */
	if (slot < DETECT_SYSCALL_SLOTS)
		__sync_fetch_and_add(&s->counts[slot], 1);
	else
		__sync_fetch_and_add(&s->other, 1);
	__sync_fetch_and_add(&s->total, 1);
	if (ret < 0)
		__sync_fetch_and_add(&s->failed, 1);
	s->hdr.ktime_ns = now; /* last activity */
	if ((nr == NR_EXECVE || nr == NR_EXECVEAT) && ret == 0)
		detect_fill_task(&s->task, task, pid_tgid); /* a new image: the agent's flush names it */

	__u64 start = s->interval_start_ns;
	if (now - start >= detect_config.summary_interval_ns &&
	    __sync_val_compare_and_swap(&s->interval_start_ns, start, now) == start) {
		/* This CPU won the interval: the record covers [start, now]. */
		emit_summary(s, task, pid_tgid, start, now, 0);
	}
}

SEC("tp_btf/sys_enter")
int BPF_PROG(detect_sys_enter, struct pt_regs *regs, long id)
{
	/* Only calls that never return are recorded at entry. */
	if (id != NR_EXIT && id != NR_EXIT_GROUP)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (detect_filtered(pid_tgid >> 32))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_RECORDS)
		emit_syscall(task, pid_tgid, (__u32)id, 0, DETECT_SYSCALL_F_NO_RETURN);
	else if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_SUMMARY)
		count_syscall(task, pid_tgid, (__u32)id, 0);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(detect_sys_exit, struct pt_regs *regs, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (detect_filtered(pid_tgid >> 32))
		return 0;
	__u32 nr = (__u32)SYSCALL_NR(regs);
	struct task_struct *task = bpf_get_current_task_btf();
	if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_RECORDS)
		emit_syscall(task, pid_tgid, nr, ret, 0);
	else if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_SUMMARY)
		count_syscall(task, pid_tgid, nr, ret);
	return 0;
}

/* Summary mode: a process's last counts go out when its last thread exits. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(detect_syscall_process_exit, struct task_struct *task)
{
	if (detect_config.syscall_mode != DETECT_SYSCALL_MODE_SUMMARY)
		return 0;
	if (task->signal->live.counter != 0)
		return 0; /* a thread, not the whole process */
	__u32 tgid = task->tgid;
	struct detect_syscall_summary *s = bpf_map_lookup_elem(&detect_syscall_counts, &tgid);
	if (!s)
		return 0;
	emit_summary(s, bpf_get_current_task_btf(), bpf_get_current_pid_tgid(), s->interval_start_ns,
		     bpf_ktime_get_boot_ns(), DETECT_SUMMARY_F_PROCESS_EXITED);
	bpf_map_delete_elem(&detect_syscall_counts, &tgid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
