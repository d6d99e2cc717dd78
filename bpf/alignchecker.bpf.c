// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* One instance of every record struct, so each lands in this object's BTF. The C# test
 * Records_MatchTheCompiledHeader reads the BTF (bpftool btf dump -j) and compares every size
 * and member offset with bpf/Detect.Records. Add each new struct here. */
#include "vmlinux.h"
#include "records.h"
#include "config.h"
#include "flow.h"
#include "enforce.h"
#include <bpf/bpf_helpers.h>

struct detect_header          align_detect_header;
struct detect_task            align_detect_task;
struct detect_syscall         align_detect_syscall;
struct detect_exec            align_detect_exec;
struct detect_exit            align_detect_exit;
struct detect_fork            align_detect_fork;
struct detect_syscall_summary align_detect_syscall_summary;
struct detect_flow            align_detect_flow;
struct detect_sensor_config   align_detect_sensor_config;
struct detect_flow_config     align_detect_flow_config;
struct detect_flow_counters   align_detect_flow_counters;
struct detect_flow_sweep      align_detect_flow_sweep;
struct detect_lpm_v4          align_detect_lpm_v4;
struct detect_lpm_v6          align_detect_lpm_v6;
struct detect_enforce_entry   align_detect_enforce_entry;
struct detect_enforce_reason  align_detect_enforce_reason;
struct detect_allow_entry     align_detect_allow_entry;
struct detect_enforce_control align_detect_enforce_control;
struct detect_enforce_counters align_detect_enforce_counters;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
