/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * common.bpf.h - what every Detect sensor object shares: the configuration, the maps several
 * objects use (the agent creates them once and hands the same map to each object with
 * bpf_map__reuse_fd, so one process ring, one set of loss counters and one set of filters serve
 * all sensors), the in-kernel filters and the filling of the record header and task block.
 */
#ifndef DETECT_COMMON_BPF_H
#define DETECT_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "records.h"
#include "config.h"

/* The only variable of every object's .rodata (the agent writes it at offset 0 before load).
 * const volatile: the verifier sees the final values and drops the branches they turn off. */
const volatile struct detect_sensor_config detect_config = {};

#define DETECT_MAX_FILTER_ENTRIES 1024
#define DETECT_CGROUP_MAX_DEPTH   16 /* ancestors checked by the cgroup filter */

/* Exec, exit, fork and syscall-summary records: low volume, never starved by the syscall ring. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} detect_process_events SEC(".maps");

/* Failed bpf_ringbuf_reserve per record type, per CPU: every lost record is counted. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DETECT_REC_TYPE_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} detect_lost SEC(".maps");

/* tgids to report when DETECT_FILTER_PID is on (value unused). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DETECT_MAX_FILTER_ENTRIES);
	__type(key, __u32);
	__type(value, __u8);
} detect_pid_filter SEC(".maps");

/* cgroup v2 ids to report, with their descendants, when DETECT_FILTER_CGROUP is on. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DETECT_MAX_FILTER_ENTRIES);
	__type(key, __u64);
	__type(value, __u8);
} detect_cgroup_filter SEC(".maps");

static __always_inline void detect_count_lost(__u32 type)
{
	__u64 *lost = bpf_map_lookup_elem(&detect_lost, &type);
	if (lost)
		*lost += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline bool detect_cgroup_allowed(void)
{
	__u64 id = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&detect_cgroup_filter, &id))
		return true;
	/* Ancestors from the root down: a filter on a container's cgroup covers its children. */
	for (int level = 1; level < DETECT_CGROUP_MAX_DEPTH; level++) {
		__u64 ancestor = bpf_get_current_ancestor_cgroup_id(level);
		if (ancestor == 0 || ancestor == id)
			return false;
		if (bpf_map_lookup_elem(&detect_cgroup_filter, &ancestor))
			return true;
	}
	return false;
}

/* True when a record about process tgid must not be written: the agent itself, or a process
 * the user-space filters leave out. The filter branches vanish when their switch is off. */
static __always_inline bool detect_filtered(__u32 tgid)
{
	if (tgid == detect_config.agent_tgid)
		return true;
	if ((detect_config.filters & DETECT_FILTER_PID) && !bpf_map_lookup_elem(&detect_pid_filter, &tgid))
		return true;
	if ((detect_config.filters & DETECT_FILTER_CGROUP) && !detect_cgroup_allowed())
		return true;
	return false;
}

/* The CPU we run on, without a helper call (the task is current: it cannot migrate while a
 * tracing program runs). */
static __always_inline __u16 detect_cpu(struct task_struct *current_task)
{
	if (bpf_core_field_exists(current_task->thread_info.cpu))
		return (__u16)current_task->thread_info.cpu;
	return (__u16)bpf_get_smp_processor_id();
}

static __always_inline void detect_fill_header(struct detect_header *hdr, __u8 type, __u16 length, __u64 now,
					       struct task_struct *current_task)
{
	hdr->magic = DETECT_RECORD_MAGIC;
	hdr->version = DETECT_FORMAT_VERSION;
	hdr->type = type;
	hdr->length = length;
	hdr->cpu = detect_cpu(current_task);
	hdr->ktime_ns = now;
}

/* The task block for the current task. Read straight through the task's BTF pointers (tp_btf
 * and tracepoint programs may): every helper call costs tens of ns on the syscall path, so the
 * fields the helpers would return (pid/tgid, comm, uid, cgroup id) are loaded directly. */
static __always_inline void detect_fill_task(struct detect_task *t, struct task_struct *task)
{
	t->pid = task->pid;
	t->tgid = task->tgid;
	t->ppid = task->real_parent->tgid;
	t->uid = task->cred->uid.val;                   /* bpf_get_current_uid_gid(), init user ns */
	t->cgroup_id = task->cgroups->dfl_cgrp->kn->id; /* bpf_get_current_cgroup_id() */
	t->start_ns = task->group_leader->start_boottime;
	/* bpf_get_current_comm() without the call: 16 bytes in two loads. */
	__u64 *comm = (__u64 *)t->comm;
	comm[0] = *(__u64 *)&task->comm[0];
	comm[1] = *(__u64 *)&task->comm[8];
}

#endif /* DETECT_COMMON_BPF_H */
