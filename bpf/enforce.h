/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * enforce.h - the enforcement maps' contract: what bpf/enforce.bpf.c reads and what the agent
 * and `detect block` write, through maps pinned under /sys/fs/bpf/detect/ (so entries hold while
 * the agent restarts and a separate process can edit them). The C# mirror is
 * bpf/Detect.Records/Enforcement.cs, checked by the size-and-offset test like the records.
 *
 * Three lists, each entry with an expiry, a hit counter and a reason:
 *   - blocked source prefixes (LPM tries, IPv4 and IPv6): XDP drops their packets;
 *   - denied destination prefixes (LPM tries): connect()/sendmsg() from the processes of the
 *     cgroups the agent attached to fail with EPERM;
 *   - processes to kill (hash by tgid): SIGKILL on their next syscall (bpf_send_signal).
 * An allowlist (LPM tries) is consulted by user space before adding and by the programs before
 * acting: an allowlisted address is never dropped or denied, whatever the block lists say.
 * What enforcement could not do is counted (struct detect_enforce_counters), never lost silently.
 */
#ifndef DETECT_ENFORCE_H
#define DETECT_ENFORCE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define DETECT_ENFORCE_VERSION 1u  /* bump on any change below: pinned maps of another layout are refused */
#define DETECT_REASON_LEN      120

/* LPM trie keys: the prefix length first, as the kernel requires; addresses in network order. */
struct detect_lpm_v4 {
	__u32 prefixlen;
	__u8  addr[4];
};

struct detect_lpm_v6 {
	__u32 prefixlen;
	__u8  addr[16];
};

/* Flags of struct detect_enforce_entry. */
#define DETECT_ENFORCE_F_DRY_RUN 0x1u /* count the match (hits), do not act */

/* The value of every block-list entry. 48 bytes. */
struct detect_enforce_entry {
	__u64 expires_ns;   /* CLOCK_BOOTTIME after which the entry no longer acts; 0: never */
	__u64 added_ns;     /* CLOCK_BOOTTIME when it was added */
	__u64 hits;         /* packets dropped / calls denied / signals sent (or would have been, dry run) */
	__u64 last_hit_ns;  /* CLOCK_BOOTTIME of the last hit; 0: none */
	__u32 reason_id;    /* key in detect_enforce_reasons */
	__u32 flags;        /* DETECT_ENFORCE_F_* */
	__u64 start_ticks;  /* kill list: the process's start time (clock ticks since boot, as in
	                     * /proc/PID/stat); a process reusing the pid is spared. 0: unchecked */
};

/* Why an entry exists: operators and the policy engine give a text; entries keep its id. */
struct detect_enforce_reason {
	__u32 length;       /* bytes used in text */
	__u32 pad0;
	char  text[DETECT_REASON_LEN];
};

/* Kinds of allowlist entries (for the error a refused block gets). */
enum detect_allow_kind {
	DETECT_ALLOW_LOOPBACK   = 1,
	DETECT_ALLOW_HOST       = 2, /* an address of this host (or of a watched namespace) */
	DETECT_ALLOW_CONFIGURED = 3, /* a CIDR the operator configured */
};

struct detect_allow_entry {
	__u32 kind;         /* enum detect_allow_kind */
	__u32 ifindex;      /* DETECT_ALLOW_HOST: the interface holding the address, else 0 */
};

/* State the programs read on their hot path (BPF_MAP_TYPE_ARRAY, one element). */
struct detect_enforce_control {
	__u32 version;      /* DETECT_ENFORCE_VERSION of whoever created the maps */
	__u32 kill_armed;   /* nonzero while the kill list has entries: sys_enter skips its lookup otherwise */
	__u32 agent_tgid;   /* the enforcing agent (never killed by the kill list); 0: none running */
	__u32 pad0;
};

/* What enforcement did and could not do, per CPU (BPF_MAP_TYPE_PERCPU_ARRAY, one element). */
struct detect_enforce_counters {
	__u64 packets_checked;    /* packets the XDP program looked at */
	__u64 dropped;            /* packets dropped (a blocked source) */
	__u64 drop_dry_run;       /* packets that matched a dry-run entry and passed */
	__u64 denied;             /* connect/sendmsg calls refused with EPERM */
	__u64 deny_dry_run;
	__u64 killed;             /* SIGKILLs sent */
	__u64 kill_dry_run;
	__u64 expired_seen;       /* matches on entries past their expiry (not acted on; swept later) */
	__u64 allowlist_overrode; /* matches on an allowlisted address (not acted on) */
	__u64 missed_signal;      /* bpf_send_signal failed: the process was not killed */
	__u64 missed_stale_pid;   /* kill entry matched a pid now owned by another process: spared */
	__u64 missed_unparsed;    /* packets whose headers could not be read: passed unchecked */
};

#endif /* DETECT_ENFORCE_H */
