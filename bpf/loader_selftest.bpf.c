// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * loader_selftest.bpf.c - exercises the C# loader (tests/Detect.Sensors.Tests), not a sensor.
 * One program that works here (tp_btf) and counts the calls of one syscall by one process into
 * every kind of map the loader handles; one program this kernel refuses (fentry is locked
 * down), to prove the refusal is reported by name and the rest keeps running.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "records.h"
#include "config.h"

const volatile struct detect_sensor_config detect_config = {};
const volatile __u32 watch_tgid = 0; /* the process to watch */
const volatile __u32 watch_nr = 0;   /* the syscall to count */

struct selftest_event {
	__u64 seq;
	__u32 tgid;
	__u32 nr;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} selftest_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} selftest_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} selftest_percpu SEC(".maps");

/* tid -> calls; also written from user space by the map tests. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} selftest_by_tid SEC(".maps");

SEC("tp_btf/sys_exit")
int BPF_PROG(selftest_sys_exit, struct pt_regs *regs, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((pid_tgid >> 32) != watch_tgid || regs->orig_ax != watch_nr)
		return 0;
	__u32 zero = 0, tid = (__u32)pid_tgid;
	__u64 *count = bpf_map_lookup_elem(&selftest_count, &zero);
	if (!count)
		return 0;
	__u64 seq = __sync_fetch_and_add(count, 1);
	__u64 *per_cpu = bpf_map_lookup_elem(&selftest_percpu, &zero);
	if (per_cpu)
		*per_cpu += 1;
	__u64 *by_tid = bpf_map_lookup_elem(&selftest_by_tid, &tid);
	if (by_tid) {
		__sync_fetch_and_add(by_tid, 1);
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&selftest_by_tid, &tid, &one, BPF_NOEXIST);
	}
	struct selftest_event *e = bpf_ringbuf_reserve(&selftest_events, sizeof(*e), 0);
	if (e) {
		e->seq = seq;
		e->tgid = pid_tgid >> 32;
		e->nr = watch_nr;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

/* Refused on this kernel (lockdown): fentry/fexit programs. */
SEC("fentry/do_nanosleep")
int BPF_PROG(selftest_fentry, struct hrtimer_sleeper *t, int mode)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
