/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * config.h - configuration the agent writes into a BPF object's read-only data between open
 * and load (as libbpf-bootstrap's min_duration_ns). Each program declares
 *   const volatile struct detect_sensor_config detect_config;
 * as the only variable of its .rodata, so the agent finds it at offset 0. The C# mirror is
 * Detect.Records.SensorConfig, checked by the same size-and-offset test as the records.
 */
#ifndef DETECT_CONFIG_H
#define DETECT_CONFIG_H

/* Modes of the syscall sensor. */
#define DETECT_SYSCALL_MODE_OFF       0u
#define DETECT_SYSCALL_MODE_RECORDS   1u /* one record per syscall */
#define DETECT_SYSCALL_MODE_SUMMARY   2u /* per-process counts, one summary record per interval */

/* Filter switches: a filter map is consulted only when its switch is on. */
#define DETECT_FILTER_PID     0x1u /* only tgids in detect_pid_filter */
#define DETECT_FILTER_CGROUP  0x2u /* only cgroup ids in detect_cgroup_filter */

struct detect_sensor_config {
	__u32 agent_tgid;          /* never report the agent itself */
	__u32 syscall_mode;        /* DETECT_SYSCALL_MODE_* */
	__u32 filters;             /* DETECT_FILTER_* */
	__u32 pad0;
	__u64 summary_interval_ns; /* aggregated mode: emit a summary at least this often per process */
};

#endif /* DETECT_CONFIG_H */
