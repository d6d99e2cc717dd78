// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * syscalls.bpf.c - the syscall sensor.
 *
 * Records mode: one struct detect_syscall per call, written at sys_exit with the return value;
 * exit and exit_group never return, so they are written at their entry tracepoints with
 * DETECT_SYSCALL_F_NO_RETURN. Summary mode: per-process counts in detect_syscall_counts,
 * one struct detect_syscall_summary per process per interval and when the process exits.
 *
 * sys_exit is a tp_btf program (BTF-typed raw tracepoint): no perf-event buffer copy of the
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

/* Summary mode: tgid -> counts since the last summary of that process. */
struct summary_entry {
	struct detect_syscall_summary rec; /* the counts; hdr is written when the record goes out */
	__u64 interval_start_tick;         /* interval start in ticks (jiffies, or ns without CONFIG_HZ) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct summary_entry);
} detect_syscall_counts SEC(".maps");

/* The interval is watched with jiffies: bpf_jiffies64 is a load, while a precise clock read
 * (bpf_ktime_get_boot_ns) is the most expensive part of a summary-mode call. The records keep
 * precise CLOCK_BOOTTIME times, read once per interval. Without the kernel config (CONFIG_HZ
 * unknown), the precise clock is used for both. */
extern unsigned int CONFIG_HZ __kconfig __weak;

static __always_inline __u64 summary_tick(void)
{
	return CONFIG_HZ ? bpf_jiffies64() : bpf_ktime_get_boot_ns();
}

static __always_inline __u64 summary_tick_ns(void)
{
	return CONFIG_HZ ? 1000000000ULL / CONFIG_HZ : 1;
}

/* Calls summary mode could not count because detect_syscall_counts was full (per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} detect_syscall_uncounted SEC(".maps");

/* Zero value for new detect_syscall_counts entries (too big for the BPF stack). In .bss, so
 * .rodata keeps detect_config as its only variable. */
struct summary_entry detect_summary_zero;

/* The syscall ring never wakes the agent: at a million records a second a wakeup (or even
 * the bpf_ringbuf_query to decide on one) per record costs more than the record. The agent
 * polls it every SensorOptions.PollInterval and drains without sleeping while records come. */
static __always_inline void emit_syscall(struct task_struct *task, __u32 nr, long ret, __u32 flags)
{
	struct detect_syscall *r = bpf_ringbuf_reserve(&detect_syscall_events, sizeof(*r), 0);
	if (!r) {
		detect_count_lost(DETECT_REC_SYSCALL);
		return;
	}
	detect_fill_header(&r->hdr, DETECT_REC_SYSCALL, sizeof(*r), bpf_ktime_get_boot_ns(), task);
	detect_fill_task(&r->task, task);
	r->ret = ret;
	r->nr = nr;
	r->flags = flags;
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
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
					 __u64 start, __u64 now, __u32 flags)
{
	struct detect_syscall_summary *r = bpf_ringbuf_reserve(&detect_process_events, sizeof(*r), 0);
	if (!r) {
		detect_count_lost(DETECT_REC_SYSCALL_SUMMARY);
		return;
	}
	detect_fill_header(&r->hdr, DETECT_REC_SYSCALL_SUMMARY, sizeof(*r), now, task);
	detect_fill_task(&r->task, task);
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

static __always_inline void count_syscall(struct task_struct *task, __u32 nr, long ret)
{
	__u32 tgid = task->tgid;
	__u64 tick = summary_tick();
	struct summary_entry *e = bpf_map_lookup_elem(&detect_syscall_counts, &tgid);
	if (!e) {
		bpf_map_update_elem(&detect_syscall_counts, &tgid, &detect_summary_zero, BPF_NOEXIST);
		e = bpf_map_lookup_elem(&detect_syscall_counts, &tgid);
		if (!e) {
			__u32 zero = 0;
			__u64 *n = bpf_map_lookup_elem(&detect_syscall_uncounted, &zero);
			if (n)
				*n += 1;
			return;
		}
		if (e->interval_start_tick == 0) {
			detect_fill_task(&e->rec.task, task);
			e->rec.interval_start_ns = bpf_ktime_get_boot_ns();
			e->interval_start_tick = tick;
		}
	}
	struct detect_syscall_summary *s = &e->rec;

	__u64 slot = nr;
	__asm__ volatile("" : "+r"(slot)); /* bound check and index in one register (see summary_move) */
	if (slot < DETECT_SYSCALL_SLOTS)
		__sync_fetch_and_add(&s->counts[slot], 1);
	else
		__sync_fetch_and_add(&s->other, 1);
	__sync_fetch_and_add(&s->total, 1);
	if (ret < 0)
		__sync_fetch_and_add(&s->failed, 1);
	if ((nr == NR_EXECVE || nr == NR_EXECVEAT) && ret == 0)
		detect_fill_task(&s->task, task); /* a new image: the agent's flush names it */

	__u64 start = e->interval_start_tick;
	if ((tick - start) * summary_tick_ns() >= detect_config.summary_interval_ns &&
	    __sync_val_compare_and_swap(&e->interval_start_tick, start, tick) == start) {
		/* This CPU won the interval: the record covers [previous start, now]. */
		__u64 now = bpf_ktime_get_boot_ns();
		__u64 start_ns = s->interval_start_ns;
		s->interval_start_ns = now;
		emit_summary(s, task, start_ns, now, 0);
	}
}

/* exit and exit_group never return: they are recorded at entry. The per-syscall tracepoints fire
 * for these two calls only, so the other calls pay no program run at entry (a tp_btf/sys_enter
 * program would run for every call to find these two). */
static __always_inline int on_no_return(__u32 nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (detect_filtered(task->tgid))
		return 0;
	if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_RECORDS)
		emit_syscall(task, nr, 0, DETECT_SYSCALL_F_NO_RETURN);
	else if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_SUMMARY)
		count_syscall(task, nr, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_exit")
int detect_sys_enter_exit(void *ctx)
{
	return on_no_return(NR_EXIT);
}

SEC("tracepoint/syscalls/sys_enter_exit_group")
int detect_sys_enter_exit_group(void *ctx)
{
	return on_no_return(NR_EXIT_GROUP);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(detect_sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (detect_filtered(task->tgid))
		return 0;
	__u32 nr = (__u32)SYSCALL_NR(regs);
	if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_RECORDS)
		emit_syscall(task, nr, ret, 0);
	else if (detect_config.syscall_mode == DETECT_SYSCALL_MODE_SUMMARY)
		count_syscall(task, nr, ret);
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
	struct summary_entry *e = bpf_map_lookup_elem(&detect_syscall_counts, &tgid);
	if (!e)
		return 0;
	emit_summary(&e->rec, task, e->rec.interval_start_ns, bpf_ktime_get_boot_ns(), DETECT_SUMMARY_F_PROCESS_EXITED);
	bpf_map_delete_elem(&detect_syscall_counts, &tgid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
