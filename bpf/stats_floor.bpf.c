// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * stats_floor.bpf.c - an empty program on the syscall-exit hook, for `./detect bench sensors`.
 * BPF run-time statistics time each run with two clock reads; what this program's run_time_ns /
 * run_cnt shows is that floor (the clock and the dispatch), which the benchmark reports beside
 * the sensors' own figures. Not a sensor.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sys_exit")
int BPF_PROG(stats_floor_sys_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
