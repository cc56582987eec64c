// SPDX-License-Identifier: GPL-2.0
/*
 * imds_connect - name the process behind each TCP connection to the EC2
 * Instance Metadata Service (or any configured address/port set).
 *
 * Hook: raw tracepoint sock:inet_sock_set_state (stable ABI, no kprobes and no
 * tracefs needed).
 *  - move to TCP_SYN_SENT: runs in the connecting task's context; daddr/dport
 *    are set, sport is not yet. If the destination is a target, save the
 *    process details (pid, comm, ancestors, argv, ...) keyed by the socket.
 *  - move out of TCP_SYN_SENT (ESTABLISHED, or CLOSE on failure): may run in
 *    softirq; the 4-tuple is complete. Fill it in, emit one record, forget the
 *    socket.
 *
 * Two guards keep one noisy source from starving the others (the tracked map
 * and the ring buffer are shared):
 *  - netns_verdict: a network namespace the agent has judged unreachable from
 *    its capture (verdict DROP) is filtered at SYN_SENT and counted.
 *  - per-source budget: a source is (network namespace, cgroup of the socket);
 *    each has a token bucket (GCRA: one "theoretical arrival time" per source)
 *    in an LRU hash. Over budget: not tracked, counted, per source too.
 * An event lost because the ring buffer is full is counted per source in the
 * same hash (with or without a budget), so the loader can say whose were lost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "imds_connect.h"

#define AF_INET		2
#define AF_INET6	10

#define MAX_TRACKED	4096
#define RINGBUF_BYTES	(1 << 20)

/* Targets, set by the loader before load (rodata: the verifier sees them). */
const volatile __u32 target_v4[IMDS_MAX_TARGETS] = {};		/* network order */
const volatile __u32 target_v6[IMDS_MAX_TARGETS][4] = {};	/* network order */
const volatile __u16 target_ports[IMDS_MAX_TARGETS] = {};	/* host order */
const volatile __u32 n_target_v4 = 0;
const volatile __u32 n_target_v6 = 0;
const volatile __u32 n_target_ports = 0;
/* Budget per source: interval between events (ns) and burst tolerance (ns); 0: no budget. */
const volatile __u64 budget_interval_ns = 0;
const volatile __u64 budget_tolerance_ns = 0;
/* 1: connections from a network namespace with verdict DROP are filtered. */
const volatile __u8 netns_filter = 0;

/* Counters, read by the loader through the mmap-ed .bss. */
__u64 lost = 0;
__u64 emitted = 0;
__u64 untracked = 0;
__u64 track_failed = 0;
__u64 filtered = 0;
__u64 over_budget = 0;

/* Network namespace inode -> IMDS_NETNS_KEEP / IMDS_NETNS_DROP (set by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IMDS_MAX_NETNS);
	__type(key, __u32);
	__type(value, __u32);
} netns_verdict SEC(".maps");

struct source_key {
	__u64 cgroup_id;
	__u32 netns_ino;
	__u32 _pad;
};

struct source_state {
	__u64 tat_ns;		/* GCRA theoretical arrival time */
	__u64 dropped;		/* over budget, ever (while the entry lives) */
	__u64 unsettled;	/* dropped at SYN_SENT, not yet seen leaving it */
	__u64 lost;		/* events lost: ring buffer full (while the entry lives) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IMDS_MAX_SOURCES);
	__type(key, struct source_key);
	__type(value, struct source_state);
} sources SEC(".maps");

/* Socket (struct sock *) in SYN_SENT -> the event being built for it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_TRACKED);
	__type(key, __u64);
	__type(value, struct imds_connect_event);
} tracked SEC(".maps");

/*
 * The event is larger than the 512-byte BPF stack: it is built in place in
 * 'tracked', starting from this all-zero template.
 */
static const struct imds_connect_event zero_event = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RINGBUF_BYTES);
} events SEC(".maps");

struct dst {
	__u16 family;		/* AF_INET (also for v4-mapped) or AF_INET6 */
	__u8 v4_mapped;
	__u16 dport;		/* host order */
	__u32 addr[4];		/* network order; IPv4 in addr[0] */
};

static __always_inline void read_dst(const struct sock *sk, struct dst *d)
{
	struct in6_addr a6;

	d->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	d->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	d->v4_mapped = 0;
	if (d->family == AF_INET) {
		d->addr[0] = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		d->addr[1] = d->addr[2] = d->addr[3] = 0;
		return;
	}
	if (d->family != AF_INET6)
		return;
	BPF_CORE_READ_INTO(&a6, sk, __sk_common.skc_v6_daddr);
	d->addr[0] = a6.in6_u.u6_addr32[0];
	d->addr[1] = a6.in6_u.u6_addr32[1];
	d->addr[2] = a6.in6_u.u6_addr32[2];
	d->addr[3] = a6.in6_u.u6_addr32[3];
	if (d->addr[0] == 0 && d->addr[1] == 0 && d->addr[2] == bpf_htonl(0xffff)) {
		/* dual-stack socket talking IPv4: report it as IPv4 */
		d->family = AF_INET;
		d->v4_mapped = 1;
		d->addr[0] = d->addr[3];
		d->addr[1] = d->addr[2] = d->addr[3] = 0;
	}
}

static __always_inline bool is_target(const struct dst *d)
{
	bool addr_ok = false;
	int i;

	if (d->family == AF_INET) {
		for (i = 0; i < IMDS_MAX_TARGETS; i++) {
			if (i >= n_target_v4)
				break;
			if (d->addr[0] == target_v4[i]) {
				addr_ok = true;
				break;
			}
		}
	} else if (d->family == AF_INET6) {
		for (i = 0; i < IMDS_MAX_TARGETS; i++) {
			if (i >= n_target_v6)
				break;
			if (d->addr[0] == target_v6[i][0] && d->addr[1] == target_v6[i][1] &&
			    d->addr[2] == target_v6[i][2] && d->addr[3] == target_v6[i][3]) {
				addr_ok = true;
				break;
			}
		}
	}
	if (!addr_ok)
		return false;
	for (i = 0; i < IMDS_MAX_TARGETS; i++) {
		if (i >= n_target_ports)
			break;
		if (d->dport == target_ports[i])
			return true;
	}
	return false;
}

static __always_inline void read_argv(struct task_struct *task, struct imds_connect_event *e)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start, end, len;

	if (!mm) {
		e->argv_error = 1;	/* kernel thread */
		return;
	}
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	if (end <= start)
		return;
	len = end - start;
	if (len > IMDS_ARGV_MAX) {
		len = IMDS_ARGV_MAX;
		e->argv_truncated = 1;
	}
	barrier_var(len);
	if (len > IMDS_ARGV_MAX)	/* for the verifier */
		return;
	if (bpf_probe_read_user(e->argv, len, (const void *)start) == 0)
		e->argv_len = len;
	else
		e->argv_error = 1;
}

static __always_inline void read_ancestors(struct task_struct *task, struct imds_connect_event *e)
{
	struct task_struct *t = BPF_CORE_READ(task, real_parent);
	struct task_struct *leader;
	__u32 pid;
	int i;

	e->ppid = BPF_CORE_READ(t, tgid);
	leader = BPF_CORE_READ(t, group_leader);
	BPF_CORE_READ_STR_INTO(&e->parent_comm, leader, comm);

	for (i = 0; i < IMDS_MAX_ANCESTORS; i++) {
		if (!t)
			break;
		pid = BPF_CORE_READ(t, tgid);
		if (pid == 0)	/* swapper: above init */
			break;
		e->ancestors[i].pid = pid;
		leader = BPF_CORE_READ(t, group_leader);
		BPF_CORE_READ_STR_INTO(&e->ancestors[i].comm, leader, comm);
		e->n_ancestors = i + 1;
		t = BPF_CORE_READ(t, real_parent);
	}
}

/*
 * The executable's path, from task->mm->exe_file->f_path, walked up to the
 * root like the kernel's d_path(): dentry by dentry to the mount's root, then
 * across to the mount point in the parent mount, until the root of the mount
 * namespace. Components are stored leaf first, each followed by a NUL (the
 * decoder reverses them). A walk cut by IMDS_EXE_DEPTH or IMDS_EXE_MAX sets
 * exe_truncated: exe[] then holds only the tail of the path.
 */
static __always_inline void read_exe(struct task_struct *task, struct imds_connect_event *e)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct dentry *dentry, *parent, *mnt_root;
	struct vfsmount *vfsmnt;
	struct mount *mnt, *mnt_parent;
	struct file *exe;
	const unsigned char *name;
	__u32 off = 0, len;
	bool done = false;
	long n;
	int i;

	exe = mm ? BPF_CORE_READ(mm, exe_file) : NULL;
	if (!exe) {
		e->exe_error = 1;	/* kernel thread, or no executable */
		return;
	}
	dentry = BPF_CORE_READ(exe, f_path.dentry);
	vfsmnt = BPF_CORE_READ(exe, f_path.mnt);
	mnt = container_of(vfsmnt, struct mount, mnt);

	for (i = 0; i < IMDS_EXE_DEPTH; i++) {
		mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
		parent = BPF_CORE_READ(dentry, d_parent);
		if (dentry == mnt_root || dentry == parent) {
			if (dentry != mnt_root) {
				done = true;	/* root of a detached tree */
				break;
			}
			mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
			if (mnt_parent == mnt || !mnt_parent) {
				done = true;	/* root of the mount namespace */
				break;
			}
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			continue;
		}
		len = BPF_CORE_READ(dentry, d_name.len);
		name = BPF_CORE_READ(dentry, d_name.name);
		if (len > IMDS_EXE_NAME_MAX || off + len + 1 >= IMDS_EXE_MAX)
			break;			/* does not fit: truncated */
		/*
		 * off stays below IMDS_EXE_MAX (checked above): the masks change no
		 * value, they keep the verifier's ranges from growing with every
		 * iteration (so it can prune). The size is at most
		 * IMDS_EXE_NAME_MAX + 1 from any offset inside exe[]: the verifier
		 * checks that against the map value (argv[] follows); the check
		 * above keeps every write inside exe[].
		 */
		n = bpf_probe_read_kernel_str(&e->exe[off & (IMDS_EXE_MAX - 1)], (len + 1) & 0x1ff, name);
		if (n <= 0) {
			e->exe_error = 1;
			break;
		}
		off = (off + n) & (IMDS_EXE_MAX - 1);
		dentry = parent;
	}
	e->exe_len = off;
	if (!done && !e->exe_error)
		e->exe_truncated = 1;
}

/* cgroup v2 id of the socket (set when it was made), 0 if this kernel does not keep it. */
static __always_inline __u64 sock_cgroup_id(const struct sock *sk)
{
	struct cgroup *cg;

	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	if (!cg)
		return 0;
	return BPF_CORE_READ(cg, kn, id);
}

static __always_inline bool netns_dropped(__u32 ino)
{
	__u32 *v;

	if (!netns_filter)
		return false;
	v = bpf_map_lookup_elem(&netns_verdict, &ino);
	return v && *v == IMDS_NETNS_DROP;
}

/* GCRA: true if the source may send one more event now. Races between CPUs only blur the rate. */
static __always_inline bool within_budget(const struct sock *sk, __u32 netns_ino)
{
	struct source_key k = { .cgroup_id = sock_cgroup_id(sk), .netns_ino = netns_ino };
	struct source_state *st, init = {};
	__u64 now, tat;

	if (!budget_interval_ns)
		return true;
	now = bpf_ktime_get_ns();
	st = bpf_map_lookup_elem(&sources, &k);
	if (!st) {
		init.tat_ns = now + budget_interval_ns;
		bpf_map_update_elem(&sources, &k, &init, BPF_NOEXIST);
		return true;
	}
	tat = st->tat_ns > now ? st->tat_ns : now;
	if (tat - now > budget_tolerance_ns) {
		__sync_fetch_and_add(&st->dropped, 1);
		__sync_fetch_and_add(&st->unsettled, 1);
		return false;
	}
	st->tat_ns = tat + budget_interval_ns;
	return true;
}

/* An event of this source did not fit in the ring buffer: count it against the source. */
static __always_inline void count_lost(const struct sock *sk, __u32 netns_ino)
{
	struct source_key k = { .cgroup_id = sock_cgroup_id(sk), .netns_ino = netns_ino };
	struct source_state *st, init = { .lost = 1 };

	st = bpf_map_lookup_elem(&sources, &k);
	if (st) {
		__sync_fetch_and_add(&st->lost, 1);
		return;
	}
	/* first of this source (no budget, or evicted): a racing CPU may have made it since */
	if (bpf_map_update_elem(&sources, &k, &init, BPF_NOEXIST)) {
		st = bpf_map_lookup_elem(&sources, &k);
		if (st)
			__sync_fetch_and_add(&st->lost, 1);
	}
}

/* A target connection left SYN_SENT untracked: was it refused at SYN_SENT (not to count twice)? */
static __always_inline bool refused_at_syn(const struct sock *sk, __u32 netns_ino)
{
	struct source_key k = { .cgroup_id = sock_cgroup_id(sk), .netns_ino = netns_ino };
	struct source_state *st;

	if (netns_dropped(netns_ino))
		return true;
	if (!budget_interval_ns)
		return false;
	st = bpf_map_lookup_elem(&sources, &k);
	if (!st || st->unsettled == 0)
		return false;
	__sync_fetch_and_sub(&st->unsettled, 1);
	return true;
}

static __always_inline int on_syn_sent(const struct sock *sk)
{
	struct imds_connect_event *e;
	struct task_struct *task;
	struct dst d;
	__u64 id, ugid, key;
	__u32 netns_ino;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	read_dst(sk, &d);
	if (!is_target(&d))
		return 0;
	netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (netns_dropped(netns_ino)) {
		__sync_fetch_and_add(&filtered, 1);
		return 0;
	}
	if (!within_budget(sk, netns_ino)) {
		__sync_fetch_and_add(&over_budget, 1);
		return 0;
	}

	key = (__u64)(unsigned long)sk;
	if (bpf_map_update_elem(&tracked, &key, &zero_event, BPF_ANY)) {
		__sync_fetch_and_add(&track_failed, 1);
		return 0;
	}
	e = bpf_map_lookup_elem(&tracked, &key);
	if (!e) {
		__sync_fetch_and_add(&track_failed, 1);
		return 0;
	}

	e->type = IMDS_REC_CONNECT;
	e->size = sizeof(*e);
	e->ts_syn_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	id = bpf_get_current_pid_tgid();
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	ugid = bpf_get_current_uid_gid();
	e->uid = (__u32)ugid;
	e->gid = ugid >> 32;
	e->netns_ino = netns_ino;
	e->family = d.family;
	e->v4_mapped = d.v4_mapped;
	e->dport = d.dport;
	__builtin_memcpy(e->daddr, d.addr, sizeof(e->daddr));
	bpf_get_current_comm(&e->comm, sizeof(e->comm));

	task = (struct task_struct *)bpf_get_current_task();
	read_ancestors(task, e);
	read_exe(task, e);
	read_argv(task, e);
	return 0;
}

static __always_inline int on_leave_syn_sent(const struct sock *sk, int newstate)
{
	struct imds_connect_event *e;
	struct in6_addr a6;
	struct dst d;
	__u64 key = (__u64)(unsigned long)sk;
	__u32 s4, snd_una;

	e = bpf_map_lookup_elem(&tracked, &key);
	if (!e) {
		/* attached mid-connect, or evicted from the LRU */
		if (BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP) {
			read_dst(sk, &d);
			if (is_target(&d) &&
			    !refused_at_syn(sk, BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum)))
				__sync_fetch_and_add(&untracked, 1);
		}
		return 0;
	}

	e->ts_emit_ns = bpf_ktime_get_ns();
	e->new_state = newstate;
	/*
	 * The SYN's sequence number: tcp_connect_init() set snd_una to it; on
	 * the move to ESTABLISHED tcp_ack() has already acknowledged the SYN
	 * (snd_una = ISN + 1); on a failure (CLOSE) nothing was acknowledged.
	 */
	snd_una = BPF_CORE_READ((const struct tcp_sock *)sk, snd_una);
	e->isn = newstate == TCP_ESTABLISHED ? snd_una - 1 : snd_una;
	/*
	 * inet_sport, not skc_num: on the move to CLOSE tcp_set_state() has
	 * already released the port (inet_num = 0); inet_sport is kept. It is
	 * what the tracepoint's own sport field reports too.
	 */
	e->sport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	if (e->family == AF_INET) {
		/* also right for v4-mapped: tcp_v4_connect() set inet_rcv_saddr */
		s4 = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(e->saddr, &s4, sizeof(s4));
	} else {
		BPF_CORE_READ_INTO(&a6, sk, __sk_common.skc_v6_rcv_saddr);
		__builtin_memcpy(e->saddr, &a6, sizeof(a6));
	}

	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0)) {
		__sync_fetch_and_add(&lost, 1);
		count_lost(sk, e->netns_ino);
	} else
		__sync_fetch_and_add(&emitted, 1);
	bpf_map_delete_elem(&tracked, &key);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(imds_inet_sock_set_state, const struct sock *sk, int oldstate, int newstate)
{
	if (newstate == TCP_SYN_SENT)
		return on_syn_sent(sk);
	if (oldstate == TCP_SYN_SENT)
		return on_leave_syn_sent(sk, newstate);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
