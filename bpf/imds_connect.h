/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * imds_connect.h - records shared by imds_connect.bpf.c (kernel),
 * imds_connect.c (loader) and agent/src/attribution/ebpf/events.ts (decoder).
 *
 * The loader writes these records, unchanged, to its stdout. Every record
 * starts with the same 8-byte header {type, size}; sizes are fixed per type.
 * All integers are in host byte order (little endian on x86_64 and arm64),
 * except saddr/daddr, which are raw network-order address bytes.
 *
 * The layout is fixed and explicitly padded (no implicit holes); it is pinned
 * by test/ebpf/events.test.ts, which compiles bpf/layout_dump.c against this
 * header and compares every offset with the TypeScript constants.
 * Bump IMDS_LAYOUT_VERSION on any change.
 *
 * The includer provides __u8/__u16/__u32/__u64 (vmlinux.h in BPF,
 * <linux/types.h> in userspace).
 */
#ifndef __IMDS_CONNECT_H
#define __IMDS_CONNECT_H

#include "../include/imds_frame.h"

#define IMDS_LAYOUT_VERSION	3

#define IMDS_COMM_LEN		16
#define IMDS_ARGV_MAX		1024	/* bytes of NUL-separated argv kept */
#define IMDS_MAX_ANCESTORS	4	/* parent, grandparent, ... */
#define IMDS_MAX_TARGETS	8	/* per list: IPv4, IPv6, ports */
#define IMDS_EXE_MAX		512	/* bytes of executable path components kept */
#define IMDS_EXE_NAME_MAX	255	/* longest path component read (NAME_MAX) */
#define IMDS_EXE_DEPTH		40	/* dentries + mount crossings walked at most */
#define IMDS_TOP_SOURCES	4	/* sources by events not traced (budget drops + ring buffer losses) in a stats record */
#define IMDS_MAX_NETNS		1024	/* network namespaces with a verdict */
#define IMDS_MAX_SOURCES	1024	/* sources with a budget (LRU) */

/* Verdicts of the netns_verdict map (key: netns inode). No entry: unknown. */
#define IMDS_NETNS_KEEP		1
#define IMDS_NETNS_DROP		2

#define IMDS_REC_CONNECT	1
#define IMDS_REC_READY		2
#define IMDS_REC_STATS		3

/* Address families as stored in 'family' (Linux AF_* values). */
#define IMDS_AF_INET		2
#define IMDS_AF_INET6		10

struct imds_ancestor {
	__u32 pid;			/*  0: tgid in the initial pid namespace */
	__u32 _pad;			/*  4 */
	char comm[IMDS_COMM_LEN];	/*  8: group leader's comm */
};					/* 24 */

/*
 * One TCP connection to a target address/port, emitted when the socket
 * leaves SYN_SENT (to ESTABLISHED, or CLOSE on failure). Process details were
 * captured at the move to SYN_SENT, in the connecting task's context.
 */
struct imds_connect_event {
	__u32 type;			/*   0: IMDS_REC_CONNECT */
	__u32 size;			/*   4: sizeof(struct imds_connect_event) */
	__u64 ts_syn_ns;		/*   8: CLOCK_MONOTONIC at SYN_SENT */
	__u64 ts_emit_ns;		/*  16: CLOCK_MONOTONIC when leaving SYN_SENT */
	__u64 cgroup_id;		/*  24: cgroup v2 id of the task */
	__u32 pid;			/*  32: thread id (kernel pid) */
	__u32 tgid;			/*  36: process id (kernel tgid) */
	__u32 ppid;			/*  40: real_parent's tgid */
	__u32 uid;			/*  44 */
	__u32 gid;			/*  48 */
	__u32 netns_ino;		/*  52: inode of the socket's network namespace */
	__u32 new_state;		/*  56: TCP state left SYN_SENT for (1 ESTABLISHED, 7 CLOSE) */
	__u16 family;			/*  60: IMDS_AF_INET or IMDS_AF_INET6 (v4-mapped is reported as INET) */
	__u16 sport;			/*  62: host order */
	__u16 dport;			/*  64: host order */
	__u16 argv_len;			/*  66: bytes valid in argv[] */
	__u8 argv_truncated;		/*  68: 1 if the argv area was longer than IMDS_ARGV_MAX */
	__u8 argv_error;		/*  69: 1 if argv could not be read (page not present, no mm) */
	__u8 v4_mapped;			/*  70: 1 if an AF_INET6 socket talked to ::ffff:a.b.c.d */
	__u8 n_ancestors;		/*  71: valid entries in ancestors[] */
	__u8 saddr[16];			/*  72: IPv4 in the first 4 bytes, network order */
	__u8 daddr[16];			/*  88 */
	char comm[IMDS_COMM_LEN];	/* 104: comm of the connecting thread */
	char parent_comm[IMDS_COMM_LEN];/* 120: comm of the parent process */
	struct imds_ancestor ancestors[IMDS_MAX_ANCESTORS]; /* 136: [0] = parent */
	__u32 isn;			/* 232: client's initial sequence number (SYN seq) */
	__u16 exe_len;			/* 236: bytes valid in exe[] */
	__u8 exe_truncated;		/* 238: 1 if the walk stopped before the root (exe[] holds the tail) */
	__u8 exe_error;			/* 239: 1 if there is no executable (kernel thread) or a read failed */
	char exe[IMDS_EXE_MAX];		/* 240: executable path components, leaf first, NUL after each:
					 *      "curl\0bin\0usr\0" is /usr/bin/curl */
	char argv[IMDS_ARGV_MAX];	/* 752: NUL-separated, as in /proc/PID/cmdline */
};					/* 1776 */

/* Written once by the loader after the program is loaded and attached. */
struct imds_ready_record {
	__u32 type;			/*  0: IMDS_REC_READY */
	__u32 size;			/*  4 */
	__u32 layout_version;		/*  8: IMDS_LAYOUT_VERSION */
	__u32 loader_pid;		/* 12 */
	__u64 open_us;			/* 16: skeleton open, CLOCK_MONOTONIC microseconds */
	__u64 load_us;			/* 24: load (verifier, CO-RE) */
	__u64 attach_us;		/* 32 */
	__u64 mono_ns;			/* 40: CLOCK_MONOTONIC now ... */
	__u64 realtime_ns;		/* 48: ... and CLOCK_REALTIME at the same moment */
	__u32 argv_max;			/* 56: IMDS_ARGV_MAX */
	__u32 ringbuf_bytes;		/* 60 */
	__u32 budget_rate;		/* 64: events per second per source (0: no budget) */
	__u32 budget_burst;		/* 68: events a source may send at once */
	__u32 netns_filter;		/* 72: 1 if network namespaces with verdict DROP are filtered */
	__u32 exe_max;			/* 76: IMDS_EXE_MAX */
};					/* 80 */

/* A source (network namespace + cgroup of the socket), its budget drops and its lost events. */
struct imds_source_drops {
	__u64 cgroup_id;		/*  0: cgroup v2 id of the socket (0 if the kernel does not say) */
	__u32 netns_ino;		/*  8 */
	__u32 _pad;			/* 12 */
	__u64 dropped;			/* 16: connections not tracked: over budget */
	__u64 lost;			/* 24: events lost: ring buffer full (layout 3) */
};					/* 32 */

/* Counters, written every second when they changed, and at exit. */
struct imds_stats_record {
	__u32 type;			/*  0: IMDS_REC_STATS */
	__u32 size;			/*  4 */
	__u64 lost;			/*  8: events dropped: ring buffer full */
	__u64 emitted;			/* 16: events put into the ring buffer */
	__u64 untracked;		/* 24: target connections that left SYN_SENT unattributed */
	__u64 track_failed;		/* 32: SYN_SENT entries that could not be stored */
	__u64 mono_ns;			/* 40 */
	__u32 final;			/* 48: 1 in the last record before exit */
	__u32 n_top;			/* 52: valid entries in top[] */
	__u64 filtered;			/* 56: target connections from a network namespace with verdict DROP */
	__u64 over_budget;		/* 64: target connections over their source's budget */
	struct imds_source_drops top[IMDS_TOP_SOURCES]; /* 72: most events not traced (dropped + lost) first */
};					/* 200 */

_Static_assert(sizeof(struct imds_ancestor) == 24, "imds_ancestor layout");
_Static_assert(sizeof(struct imds_connect_event) == 1776, "imds_connect_event layout");
_Static_assert(sizeof(struct imds_ready_record) == 80, "imds_ready_record layout");
_Static_assert(sizeof(struct imds_source_drops) == 32, "imds_source_drops layout");
_Static_assert(sizeof(struct imds_stats_record) == 200, "imds_stats_record layout");

/* Every record begins with the framing header both helpers share (include/imds_frame.h). */
#define IMDS_FRAMED(rec) \
	_Static_assert(__builtin_offsetof(struct rec, type) == __builtin_offsetof(struct imds_frame_hdr, type) \
		       && __builtin_offsetof(struct rec, size) == __builtin_offsetof(struct imds_frame_hdr, size) \
		       && sizeof(((struct rec *)0)->type) == 4 && sizeof(((struct rec *)0)->size) == 4, #rec " framing")
IMDS_FRAMED(imds_connect_event);
IMDS_FRAMED(imds_ready_record);
IMDS_FRAMED(imds_stats_record);

#endif /* __IMDS_CONNECT_H */
