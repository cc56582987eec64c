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

/* Counters, read by the loader through the mmap-ed .bss. */
__u64 lost = 0;
__u64 emitted = 0;
__u64 untracked = 0;
__u64 track_failed = 0;

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

static __always_inline int on_syn_sent(const struct sock *sk)
{
	struct imds_connect_event *e;
	struct task_struct *task;
	struct dst d;
	__u64 id, ugid, key;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	read_dst(sk, &d);
	if (!is_target(&d))
		return 0;

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
	e->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	e->family = d.family;
	e->v4_mapped = d.v4_mapped;
	e->dport = d.dport;
	__builtin_memcpy(e->daddr, d.addr, sizeof(e->daddr));
	bpf_get_current_comm(&e->comm, sizeof(e->comm));

	task = (struct task_struct *)bpf_get_current_task();
	read_ancestors(task, e);
	read_argv(task, e);
	return 0;
}

static __always_inline int on_leave_syn_sent(const struct sock *sk, int newstate)
{
	struct imds_connect_event *e;
	struct in6_addr a6;
	struct dst d;
	__u64 key = (__u64)(unsigned long)sk;
	__u32 s4;

	e = bpf_map_lookup_elem(&tracked, &key);
	if (!e) {
		/* attached mid-connect, or evicted from the LRU */
		if (BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP) {
			read_dst(sk, &d);
			if (is_target(&d))
				__sync_fetch_and_add(&untracked, 1);
		}
		return 0;
	}

	e->ts_emit_ns = bpf_ktime_get_ns();
	e->new_state = newstate;
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

	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0))
		__sync_fetch_and_add(&lost, 1);
	else
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
