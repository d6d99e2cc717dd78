// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * process.bpf.c - the process sensor: exec, exit (of a whole process) and fork (of a new
 * process, not a thread), written to the process ring.
 */
#include "common.bpf.h"

#define SIGNAL_GROUP_EXIT 0x00000004 /* include/linux/sched/signal.h */

/* Exec records are too big for the BPF stack; they are built in place in the ring. */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(detect_process_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	if (detect_filtered(task->tgid))
		return 0;
	struct detect_exec *r = bpf_ringbuf_reserve(&detect_process_events, sizeof(*r), 0);
	if (!r) {
		detect_count_lost(DETECT_REC_EXEC);
		return 0;
	}
	detect_fill_header(&r->hdr, DETECT_REC_EXEC, sizeof(*r), bpf_ktime_get_boot_ns(), task);
	detect_fill_task(&r->task, task);
	r->old_pid = (__u32)old_pid;
	r->flags = 0;
	r->pad0 = 0;

	long n = bpf_probe_read_kernel_str(r->filename, sizeof(r->filename), bprm->filename);
	if (n < 0) {
		n = 1;
		r->filename[0] = 0;
	}
	r->filename_len = (__u16)(n - 1);
	if (n == sizeof(r->filename))
		r->flags |= DETECT_EXEC_F_FILENAME_TRUNCATED; /* may also be an exact fit: a hint */

	/* argv of the new image: NUL-separated strings between arg_start and arg_end. */
	struct mm_struct *mm = task->mm;
	__u64 start = mm->arg_start, end = mm->arg_end;
	__u32 len = end > start ? (__u32)(end - start) : 0;
	if (end - start > sizeof(r->args)) {
		len = sizeof(r->args);
		r->flags |= DETECT_EXEC_F_ARGS_TRUNCATED;
	}
	if (len > 0 && len <= sizeof(r->args)) {
		if (bpf_probe_read_user(r->args, len, (void *)start) != 0)
			len = 0;
	} else {
		len = 0;
	}
	r->args_len = (__u16)len;
	bpf_ringbuf_submit(r, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(detect_process_exit, struct task_struct *task)
{
	/* do_exit has already decremented signal->live: 0 means this was the last thread. */
	struct signal_struct *signal = task->signal;
	if (signal->live.counter != 0)
		return 0;
	if (detect_filtered(task->tgid))
		return 0;
	struct detect_exit *r = bpf_ringbuf_reserve(&detect_process_events, sizeof(*r), 0);
	if (!r) {
		detect_count_lost(DETECT_REC_EXIT);
		return 0;
	}
	__u64 now = bpf_ktime_get_boot_ns();
	detect_fill_header(&r->hdr, DETECT_REC_EXIT, sizeof(*r), now, task);
	detect_fill_task(&r->task, task);
	/* What wait(2) would report, as wait_task_zombie computes it. */
	r->exit_code = (signal->flags & SIGNAL_GROUP_EXIT) ? signal->group_exit_code : task->exit_code;
	r->pad0 = 0;
	r->duration_ns = now - r->task.start_ns;
	bpf_ringbuf_submit(r, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(detect_process_fork, struct task_struct *parent, struct task_struct *child)
{
	/* A new thread joins its parent's thread group: only new processes are recorded. */
	if (child->pid != child->tgid)
		return 0;
	struct task_struct *current_task = bpf_get_current_task_btf(); /* the parent thread */
	if (detect_filtered(current_task->tgid))
		return 0;
	struct detect_fork *r = bpf_ringbuf_reserve(&detect_process_events, sizeof(*r), 0);
	if (!r) {
		detect_count_lost(DETECT_REC_FORK);
		return 0;
	}
	detect_fill_header(&r->hdr, DETECT_REC_FORK, sizeof(*r), bpf_ktime_get_boot_ns(), current_task);
	detect_fill_task(&r->task, current_task);
	r->child_pid = (__u32)child->tgid;
	r->pad0 = 0;
	r->child_start_ns = child->start_boottime;
	bpf_ringbuf_submit(r, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
