/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * flow.h - the flow sensor's control structures (the record it emits, struct detect_flow, is in
 * records.h). The C# mirrors are in bpf/Detect.Records/FlowTable.cs, checked against the
 * compiled alignchecker object like the records. Padding is written out; fields are appended.
 */
#ifndef DETECT_FLOW_H
#define DETECT_FLOW_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Read-only configuration of flow.bpf.o (const volatile flow_config, set between open and load). */
struct detect_flow_config {
	__u64 idle_timeout_ns;   /* a flow with no packet for this long is exported (IDLE) */
	__u64 active_timeout_ns; /* a flow is exported (ACTIVE) at least this often while it lasts */
	__u64 tcp_linger_ns;     /* after a TCP end, how long the entry waits for the last ACK / strays */
	__u64 pressure_idle_ns;  /* table under pressure: flows idle this long are exported (EVICTED) and dropped */
	__u32 max_flows;         /* capacity of the flow table (its max_entries) */
	__u32 pressure_permille; /* occupancy (per mille of max_flows) from which the sweep makes room */
};

/* Counters of the flow sensor, one per CPU (BPF_MAP_TYPE_PERCPU_ARRAY, one element). With the
 * pending counts a sweep reports they obey a conservation law the tests check:
 *   packets = exported_packets + pending packets + uncounted_packets
 * The flow table is a plain hash (LRU maps cannot hold the spin lock that keeps counts exact),
 * so the kernel never evicts silently: a full table refuses new flows and their packets are
 * counted here (table_full, uncounted_*), and the sweep makes room first by exporting idle flows
 * as EVICTED when the table passes its pressure mark. */
struct detect_flow_counters {
	__u64 packets;           /* IP packets seen (each segment of a GSO packet) */
	__u64 bytes;             /* their L3 bytes */
	__u64 skbs;              /* program runs that saw an IP packet (one per skb) */
	__u64 not_ip;            /* skbs that were neither IPv4 nor IPv6: not counted */
	__u64 truncated;         /* IP skbs whose headers could not be read: not counted */
	__u64 flows_created;     /* entries inserted */
	__u64 flows_deleted;     /* entries the sweep removed after exporting them */
	__u64 records;           /* flow records written to the ring */
	__u64 exported_packets;  /* packets in those records */
	__u64 exported_bytes;
	__u64 ring_full;         /* exports the ring had no room for: the counts stay in the entry, the sweep retries */
	__u64 table_full;        /* skbs of a new flow the full table had no entry for */
	__u64 uncounted_packets; /* packets in no flow: table full, or an entry recycled under us twice */
	__u64 uncounted_bytes;
	__u64 owner_lookups;     /* egress packets that looked for their socket's owner */
	__u64 owner_found;       /* ... and found it */
	__u64 sweeps;            /* sweep runs */
};

/* Flags of struct detect_flow_sweep. */
#define DETECT_FLOW_SWEEP_F_FLUSH 0x1u /* export every pending count now (reason FLUSH) */

/* A sweep: the agent runs detect_flow_sweep with BPF_PROG_TEST_RUN and a packet holding this
 * struct after a 14-byte Ethernet header; the program walks the flow table, exports what the
 * timeouts say is due, drops finished entries, and writes the results back in place. */
struct detect_flow_sweep {
	__u32 flags;             /* in: DETECT_FLOW_SWEEP_F_* */
	__u32 pad0;
	__u64 now_ns;            /* out: CLOCK_BOOTTIME of the sweep */
	__u64 entries;           /* out: entries in the table when visited */
	__u64 exported;          /* out: records written by this sweep */
	__u64 deleted;           /* out: entries removed */
	__u64 ring_full;         /* out: exports that found the ring full (retried next sweep) */
	__u64 pending_flows;     /* out: entries still holding unexported counts afterwards */
	__u64 pending_packets;   /* out: their packets */
	__u64 pending_bytes;     /* out: their bytes */
	__u64 evicted;           /* out: records exported with reason EVICTED (table pressure) */
};

#endif /* DETECT_FLOW_H */
