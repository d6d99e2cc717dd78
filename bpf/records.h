/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * records.h - the one definition of every record Detect's sensors emit.
 *
 * This header is the wire contract between the BPF programs (the .bpf.c files here), the agent that
 * drains them (sensors/) and everything downstream (pipeline/). The C# mirror lives in
 * bpf/Detect.Records/Records.cs and a test compares every size and offset below with the
 * BTF of the compiled alignchecker object, so the two cannot drift.
 *
 * Rules (as in Tetragon's msg_common): every record starts with struct detect_header; padding
 * is written out as named fields; fields are never reordered; new fields go at the end of a
 * body and DETECT_FORMAT_VERSION is bumped. All integers are little-endian (the host's order;
 * the agent only runs on little-endian machines). Every record length is a multiple of 8.
 */
#ifndef DETECT_RECORDS_H
#define DETECT_RECORDS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define DETECT_RECORD_MAGIC   0xDE7Eu /* first two bytes of every record */
#define DETECT_FORMAT_VERSION 1u      /* bump on any change below */

#define DETECT_COMM_LEN        16
#define DETECT_FILENAME_LEN    256
#define DETECT_ARGS_LEN        256
#define DETECT_SYSCALL_SLOTS   512 /* x86-64 syscall numbers fit below this */

enum detect_record_type {
	DETECT_REC_NONE            = 0,
	DETECT_REC_SYSCALL         = 1, /* one syscall, emitted at its exit (or entry if it never returns) */
	DETECT_REC_EXEC            = 2, /* a task image was replaced (sched_process_exec) */
	DETECT_REC_EXIT            = 3, /* the last thread of a process exited */
	DETECT_REC_FORK            = 4, /* a new process (not a thread) was created */
	DETECT_REC_SYSCALL_SUMMARY = 5, /* per-process syscall counts for one interval (aggregated mode) */
	DETECT_REC_FLOW            = 6, /* one network flow, or a slice of a long one */
	DETECT_REC_TYPE_COUNT      = 7, /* loss counters are indexed by type: keep last */
};

/* Common header of every record: 16 bytes. */
struct detect_header {
	__u16 magic;    /* DETECT_RECORD_MAGIC */
	__u8  version;  /* DETECT_FORMAT_VERSION of the writer */
	__u8  type;     /* enum detect_record_type */
	__u16 length;   /* whole record in bytes, header included */
	__u16 cpu;      /* CPU the record was written on */
	__u64 ktime_ns; /* CLOCK_BOOTTIME in ns (bpf_ktime_get_boot_ns) */
};

/* Who did it: the task that the record is about. 48 bytes. */
struct detect_task {
	__u32 pid;            /* kernel tid */
	__u32 tgid;           /* process id as user space sees it */
	__u32 ppid;           /* tgid of the real parent */
	__u32 uid;
	__u64 cgroup_id;      /* cgroup v2 id (inode number of the cgroup directory) */
	__u64 start_ns;       /* process (group leader) start, CLOCK_BOOTTIME ns: with tgid, a unique process key */
	char  comm[DETECT_COMM_LEN];
};

/* Flags of struct detect_syscall. */
#define DETECT_SYSCALL_F_NO_RETURN 0x1u /* emitted at entry: the call does not return (exit, exit_group) */

/* DETECT_REC_SYSCALL: 80 bytes. */
struct detect_syscall {
	struct detect_header hdr;
	struct detect_task   task;
	__s64 ret;            /* return value; 0 when DETECT_SYSCALL_F_NO_RETURN */
	__u32 nr;             /* syscall number of the running kernel's ABI (x86-64) */
	__u32 flags;          /* DETECT_SYSCALL_F_* */
};

/* Flags of struct detect_exec. */
#define DETECT_EXEC_F_FILENAME_TRUNCATED 0x1u
#define DETECT_EXEC_F_ARGS_TRUNCATED     0x2u

/* DETECT_REC_EXEC: 592 bytes. */
struct detect_exec {
	struct detect_header hdr;
	struct detect_task   task;       /* after the exec: comm is the new image's */
	__u32 old_pid;                    /* tid before the exec (differs when a thread execs) */
	__u32 flags;                      /* DETECT_EXEC_F_* */
	__u16 filename_len;               /* bytes used in filename, without the NUL */
	__u16 args_len;                   /* bytes used in args: argv joined by NUL bytes */
	__u32 pad0;
	char  filename[DETECT_FILENAME_LEN];
	char  args[DETECT_ARGS_LEN];
};

/* DETECT_REC_EXIT: 80 bytes. */
struct detect_exit {
	struct detect_header hdr;
	struct detect_task   task;
	__s32 exit_code;      /* exit status as wait(2) reports it: (code << 8) | signal */
	__u32 pad0;
	__u64 duration_ns;    /* from process start to this exit */
};

/* DETECT_REC_FORK: 80 bytes. hdr/task describe the parent. */
struct detect_fork {
	struct detect_header hdr;
	struct detect_task   task;       /* the parent (the caller of fork/clone) */
	__u32 child_pid;                  /* tgid of the new process */
	__u32 pad0;
	__u64 child_start_ns;             /* CLOCK_BOOTTIME start of the child */
};

/* Flags of struct detect_syscall_summary. */
#define DETECT_SUMMARY_F_PROCESS_EXITED 0x1u /* flushed because the process exited */
#define DETECT_SUMMARY_F_USER_FLUSHED   0x2u /* flushed by the agent (idle process, or shutdown) */

/* DETECT_REC_SYSCALL_SUMMARY: 2,136 bytes. Counts of every syscall a process made in
 * [interval_start_ns, hdr.ktime_ns]; one record per process per interval. */
struct detect_syscall_summary {
	struct detect_header hdr;
	struct detect_task   task;
	__u64 interval_start_ns;          /* CLOCK_BOOTTIME of the first counted call */
	__u32 total;                      /* calls counted */
	__u32 failed;                     /* of which returned a negative value */
	__u32 flags;                      /* DETECT_SUMMARY_F_* */
	__u32 other;                      /* calls whose number is >= DETECT_SYSCALL_SLOTS */
	__u32 counts[DETECT_SYSCALL_SLOTS];
};

/* Flow direction, from this host's point of view: who sent the first packet seen. */
enum detect_flow_direction {
	DETECT_FLOW_DIR_UNKNOWN  = 0,
	DETECT_FLOW_DIR_INGRESS  = 1, /* the remote side initiated (first packet came in) */
	DETECT_FLOW_DIR_EGRESS   = 2, /* this host initiated */
};

/* Why a flow record was emitted. */
enum detect_flow_reason {
	DETECT_FLOW_END_TCP      = 1, /* FIN seen both ways, or RST */
	DETECT_FLOW_END_IDLE     = 2, /* no packet for the idle timeout */
	DETECT_FLOW_END_ACTIVE   = 3, /* long flow: periodic export every active timeout */
	DETECT_FLOW_END_EVICTED  = 4, /* the flow table had to make room */
	DETECT_FLOW_END_FLUSH    = 5, /* the agent stopped or flushed the table */
};

/* DETECT_REC_FLOW: 144 bytes. Addresses are in network byte order; IPv4 uses the first 4
 * bytes of saddr/daddr and zeros elsewhere. "src" is the side that sent the first packet seen;
 * fwd counters count src->dst packets, rev counters dst->src. Counts cover
 * [first_ns, last_ns] of this record only (an active-timeout slice starts counting anew). */
struct detect_flow {
	struct detect_header hdr;
	__u8  family;                     /* 4 or 6 */
	__u8  protocol;                   /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, ... */
	__u8  direction;                  /* enum detect_flow_direction */
	__u8  reason;                     /* enum detect_flow_reason */
	__u32 ifindex;                    /* interface the packets were seen on */
	__u8  saddr[16];
	__u8  daddr[16];
	__u16 sport;                      /* host byte order; ICMP: type << 8 | code */
	__u16 dport;                      /* host byte order */
	__u8  tcp_flags;                  /* OR of every TCP flag byte seen */
	__u8  pad0[3];
	__u64 first_ns;                   /* CLOCK_BOOTTIME of the first packet in this record */
	__u64 last_ns;                    /* ... and of the last */
	__u64 packets_fwd;
	__u64 bytes_fwd;                  /* L3 bytes (IP header and payload) */
	__u64 packets_rev;
	__u64 bytes_rev;
	__u32 syn_count;
	__u32 fin_count;
	__u32 rst_count;
	__u32 pid;                        /* tgid of the local socket owner, 0 when unknown */
	__u64 socket_cookie;              /* 0 when unknown */
	__u64 cgroup_id;                  /* cgroup of the local socket owner, 0 when unknown */
};

#endif /* DETECT_RECORDS_H */
