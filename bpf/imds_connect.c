// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * imds_connect - loader for imds_connect.bpf.c.
 *
 * open -> set rodata (targets) -> load -> attach -> ready record -> poll loop.
 *
 * Output (stdout): the fixed-size binary records of imds_connect.h: one
 * imds_ready_record once attached, one imds_connect_event per connection,
 * imds_stats_record every second when the counters changed and once at exit.
 * With --text, or when stdout is a terminal, readable lines instead.
 *
 * After the ready record stdout is non-blocking and records go through an
 * output queue (bounded, OUT_QUEUE_MAX): the ring buffer is drained into it at
 * once, so a burst waits here (not in the kernel ring, where it would be lost)
 * while the agent catches up. Under a stream of events the queue is written at
 * most every 5 ms (or per 64 KiB), so the agent wakes once per batch, not once
 * per connection; a lone event is written at once. While a batch waits, the
 * ring buffer is not polled either: the events that come meanwhile stay in the
 * kernel ring (which then wakes nobody: it wakes its reader only when a record
 * lands in an empty ring) and are drained just before the batch is written, so
 * the loader wakes about twice per batch, not once per event, and they reach
 * the agent when they did before. When the queue is full the
 * ring buffer is left alone until the agent has read some: events are then
 * lost only when the ring buffer fills too, and counted there (lost). The
 * queue's memory is given back once it is empty.
 *
 * Network namespace verdicts (--keep-netns, --drop-netns, and at run time
 * lines on stdin: "keep INO", "drop INO", "forget INO") go into the
 * netns_verdict map; with the filter on (--netns-filter, or any verdict
 * given), connections from a namespace with verdict "drop" are counted and
 * not traced. --budget-rate/--budget-burst bound the events per source
 * (network namespace + cgroup) in the kernel.
 *
 * Exits 0 on SIGTERM/SIGINT/SIGHUP, when stdout is closed (EPIPE) and, if
 * stdin is a pipe or socket, when stdin reaches EOF (the parent died).
 * On failure: one line "imds-connect: <step> failed: <reason>" on stderr
 * and exit status 1 (2 for usage errors).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "imds_connect.h"
#include "imds_connect.skel.h"

#define PROG "imds-connect"
/*
 * Must match imds_connect.bpf.c. 1 MiB (~590 events) is enough with the output queue draining it:
 * measured 0 lost at 5,000 connects/s (bench/connect-rate.mjs); a larger ring costs twice its size
 * in the loader's RSS (the data pages are mapped twice, for wrap-around), all the time.
 */
#define RINGBUF_BYTES (1 << 20)
/* --ringbuf-bytes bounds (a power of two; the kernel also wants a multiple of the page size). */
#define RINGBUF_MIN_BYTES (1 << 12)
#define RINGBUF_MAX_BYTES (1 << 26)
/* Bytes of records waiting for the agent at most: ~9,400 connect events. */
#define OUT_QUEUE_MAX (16u << 20)
/*
 * Under a stream of events the queue is written at most every FLUSH_LINGER_NS (sooner when
 * FLUSH_BATCH_BYTES wait): the agent then reads a batch per wakeup instead of one read per
 * connection (each read costs it tens of microseconds of CPU, whatever its size). An event after a
 * quiet moment (nothing written for FLUSH_LINGER_NS) is written at once: the agent reads a caller's
 * /proc entries (its cgroup) when the event comes, and a short-lived caller may not wait.
 * A stats record flushes at once.
 */
#define FLUSH_LINGER_NS (5 * 1000000ull)
#define FLUSH_BATCH_BYTES (64u << 10)
/*
 * A waiting batch leaves the ring buffer unread only while the last batch written (the events of
 * about one linger, whichever way they were read), and one event more, fill less than
 * 1/HOLD_RING_FRACTION of the ring: a stream fast enough to fill the ring during one linger is
 * drained at every wakeup instead (a ring of a few events, --ringbuf-bytes 4096 or 8192, always is).
 */
#define HOLD_RING_FRACTION 4
/* A larger pipe toward the agent: fewer, larger reads (best effort). */
#define PIPE_BYTES (1 << 20)
#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031	/* linux/fcntl.h: F_LINUX_SPECIFIC_BASE + 7 */
#endif

static volatile sig_atomic_t exiting;
static bool verbose;
static bool text_mode;
static bool stdout_closed;
/* Events taken from the ring buffer but not queued (out of memory): added to lost. */
static __u64 queue_lost;

static struct {
	__u32 v4[IMDS_MAX_TARGETS];
	__u32 v6[IMDS_MAX_TARGETS][4];
	__u16 ports[IMDS_MAX_TARGETS];
	unsigned int n_v4, n_v6, n_ports;
	bool v4_set, v6_set, ports_set;
} targets;

static struct {
	__u32 ino[IMDS_MAX_NETNS];
	__u32 verdict[IMDS_MAX_NETNS];
	unsigned int n;
	bool filter;
} netns_opts;

static unsigned long ringbuf_bytes = RINGBUF_BYTES;	/* --ringbuf-bytes (tests: a tiny ring) */
static unsigned long budget_rate;	/* events/s per source; 0: no budget */
static unsigned long budget_burst = 1;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: imds_connect [--ipv4 ADDR]... [--ipv6 ADDR]... [--port PORT]...\n"
		"                    [--netns-filter] [--keep-netns INO]... [--drop-netns INO]...\n"
		"                    [--budget-rate N --budget-burst N] [--ringbuf-bytes N]\n"
		"                    [--text] [--verbose]\n"
		"Report the process behind each TCP connection to the given addresses/ports\n"
		"(default: 169.254.169.254, fd00:ec2::254, port 80). Each list given replaces\n"
		"its default; at most %d entries per list.\n"
		"--keep-netns/--drop-netns give a network namespace (inode) a verdict and turn\n"
		"on the filter: connections from a namespace with verdict drop are counted, not\n"
		"traced. At run time, stdin lines \"keep INO\", \"drop INO\", \"forget INO\" do the same.\n"
		"--budget-rate N: at most N events per second per source (network namespace +\n"
		"cgroup), bursts of --budget-burst; more are counted, not traced.\n"
		"--ringbuf-bytes N: kernel ring buffer size (a power of two, %d to %d; default %d).\n"
		"Writes fixed-size binary records (imds_connect.h) to stdout, or text lines\n"
		"with --text or when stdout is a terminal.\n", IMDS_MAX_TARGETS,
		RINGBUF_MIN_BYTES, RINGBUF_MAX_BYTES, RINGBUF_BYTES);
}

/* The one failure line. */
static int fail(const char *step, int err, const char *hint)
{
	fprintf(stderr, PROG ": %s failed: %s%s%s%s\n", step, strerror(err),
		hint ? " (" : "", hint ? hint : "", hint ? ")" : "");
	return 1;
}

static const char *perm_hint(int err)
{
	if (err == EPERM || err == EACCES)
		return "need root or CAP_BPF+CAP_PERFMON";
	return NULL;
}

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level != LIBBPF_WARN && !verbose)
		return 0;
	return vfprintf(stderr, format, args);
}

static __u64 now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (__u64)ts.tv_sec * 1000000000ull + (__u64)ts.tv_nsec;
}

static void on_signal(int sig)
{
	(void)sig;
	exiting = 1;
}

static int add_v4(__u32 addr)
{
	if (!targets.v4_set) {
		targets.v4_set = true;
		targets.n_v4 = 0;
	}
	if (targets.n_v4 >= IMDS_MAX_TARGETS)
		return -1;
	targets.v4[targets.n_v4++] = addr;
	return 0;
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || *s == '-' || v > max)
		return -1;
	*out = v;
	return 0;
}

static int add_netns(const char *arg, __u32 verdict)
{
	unsigned long ino;

	if (parse_ulong(arg, 0xffffffffUL, &ino) || ino == 0) {
		fprintf(stderr, PROG ": bad network namespace inode: %s\n", arg);
		return -1;
	}
	if (netns_opts.n >= IMDS_MAX_NETNS) {
		fprintf(stderr, PROG ": too many network namespaces (max %d)\n", IMDS_MAX_NETNS);
		return -1;
	}
	netns_opts.ino[netns_opts.n] = (__u32)ino;
	netns_opts.verdict[netns_opts.n++] = verdict;
	netns_opts.filter = true;
	return 0;
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ipv4", required_argument, NULL, '4' },
		{ "ipv6", required_argument, NULL, '6' },
		{ "port", required_argument, NULL, 'p' },
		{ "netns-filter", no_argument, NULL, 'F' },
		{ "keep-netns", required_argument, NULL, 'K' },
		{ "drop-netns", required_argument, NULL, 'D' },
		{ "budget-rate", required_argument, NULL, 'R' },
		{ "budget-burst", required_argument, NULL, 'B' },
		{ "ringbuf-bytes", required_argument, NULL, 'r' },
		{ "text", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	struct in_addr a4;
	struct in6_addr a6;
	char *end;
	long port;
	int c;

	while ((c = getopt_long(argc, argv, "4:6:p:tvh", opts, NULL)) != -1) {
		switch (c) {
		case '4':
			if (inet_pton(AF_INET, optarg, &a4) != 1) {
				fprintf(stderr, PROG ": bad --ipv4 address: %s\n", optarg);
				return -1;
			}
			if (add_v4(a4.s_addr)) {
				fprintf(stderr, PROG ": too many --ipv4 addresses (max %d)\n", IMDS_MAX_TARGETS);
				return -1;
			}
			break;
		case '6':
			if (inet_pton(AF_INET6, optarg, &a6) != 1) {
				fprintf(stderr, PROG ": bad --ipv6 address: %s\n", optarg);
				return -1;
			}
			if (IN6_IS_ADDR_V4MAPPED(&a6)) {
				/* the kernel side reports v4-mapped as IPv4: match it there */
				if (add_v4(a6.s6_addr32[3])) {
					fprintf(stderr, PROG ": too many IPv4 addresses (max %d)\n", IMDS_MAX_TARGETS);
					return -1;
				}
				break;
			}
			if (!targets.v6_set) {
				targets.v6_set = true;
				targets.n_v6 = 0;
			}
			if (targets.n_v6 >= IMDS_MAX_TARGETS) {
				fprintf(stderr, PROG ": too many --ipv6 addresses (max %d)\n", IMDS_MAX_TARGETS);
				return -1;
			}
			memcpy(targets.v6[targets.n_v6++], &a6, 16);
			break;
		case 'p':
			errno = 0;
			port = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || port < 1 || port > 65535) {
				fprintf(stderr, PROG ": bad --port: %s\n", optarg);
				return -1;
			}
			if (!targets.ports_set) {
				targets.ports_set = true;
				targets.n_ports = 0;
			}
			if (targets.n_ports >= IMDS_MAX_TARGETS) {
				fprintf(stderr, PROG ": too many --port values (max %d)\n", IMDS_MAX_TARGETS);
				return -1;
			}
			targets.ports[targets.n_ports++] = (__u16)port;
			break;
		case 'F':
			netns_opts.filter = true;
			break;
		case 'K':
		case 'D':
			if (add_netns(optarg, c == 'K' ? IMDS_NETNS_KEEP : IMDS_NETNS_DROP))
				return -1;
			break;
		case 'R':
			if (parse_ulong(optarg, 1000000000UL, &budget_rate)) {
				fprintf(stderr, PROG ": bad --budget-rate: %s\n", optarg);
				return -1;
			}
			break;
		case 'B':
			if (parse_ulong(optarg, 1000000UL, &budget_burst) || budget_burst == 0) {
				fprintf(stderr, PROG ": bad --budget-burst: %s\n", optarg);
				return -1;
			}
			break;
		case 'r':
			if (parse_ulong(optarg, RINGBUF_MAX_BYTES, &ringbuf_bytes) || ringbuf_bytes < RINGBUF_MIN_BYTES ||
			    (ringbuf_bytes & (ringbuf_bytes - 1)) || ringbuf_bytes % (unsigned long)getpagesize()) {
				fprintf(stderr, PROG ": bad --ringbuf-bytes: %s (a power of two, %d to %d, and a multiple of the page size)\n",
					optarg, RINGBUF_MIN_BYTES, RINGBUF_MAX_BYTES);
				return -1;
			}
			break;
		case 't':
			text_mode = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument: %s\n", argv[optind]);
		return -1;
	}
	return 0;
}

static void set_defaults(void)
{
	struct in6_addr a6;

	if (!targets.v4_set) {
		targets.v4[0] = htonl(0xa9fea9fe);	/* 169.254.169.254 */
		targets.n_v4 = 1;
	}
	if (!targets.v6_set) {
		inet_pton(AF_INET6, "fd00:ec2::254", &a6);
		memcpy(targets.v6[0], &a6, 16);
		targets.n_v6 = 1;
	}
	if (!targets.ports_set) {
		targets.ports[0] = 80;
		targets.n_ports = 1;
	}
}

/* Write a whole record; false once stdout is gone. */
static bool write_all(const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0 && !stdout_closed) {
		ssize_t n = write(STDOUT_FILENO, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* EPIPE: the reader went away. Anything else: same outcome. */
			stdout_closed = true;
			exiting = 1;
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return !stdout_closed;
}

static unsigned char *outq;
static size_t outq_len, outq_cap;
static __u64 last_write_ns;	/* CLOCK_MONOTONIC ns of the last write to stdout */
static size_t last_batch;	/* bytes in the queue when it was last written */

/* Room for len more bytes in the output queue (stats records may pass the bound). */
static bool queue_has_room(size_t len)
{
	return outq_len + len <= OUT_QUEUE_MAX;
}

/* Append a record; false if memory ran out (the caller counts it). */
static bool queue_put(const void *rec, size_t len)
{
	if (outq_len + len > outq_cap) {
		size_t cap = outq_cap ? outq_cap : 65536;
		unsigned char *q;

		while (cap < outq_len + len)
			cap *= 2;
		q = realloc(outq, cap);
		if (!q)
			return false;
		outq = q;
		outq_cap = cap;
	}
	memcpy(outq + outq_len, rec, len);
	outq_len += len;
	return true;
}

/* The queue should be written now: a batch is full, or nothing was written for FLUSH_LINGER_NS. */
static bool queue_due(__u64 now)
{
	return outq_len && (outq_len >= FLUSH_BATCH_BYTES || now - last_write_ns >= FLUSH_LINGER_NS);
}

/*
 * Milliseconds poll() may sleep before the queue is due (at most max_ms). A due queue waits for
 * POLLOUT (the agent reading), not for a timeout: a full pipe must not make the loop spin.
 */
static int queue_wait_ms(__u64 now, int max_ms)
{
	__u64 left;

	if (!outq_len || queue_due(now))
		return max_ms;
	left = FLUSH_LINGER_NS - (now - last_write_ns);
	return (int)((left + 999999) / 1000000);
}

/*
 * A batch is waiting for its time (not due yet) and the ring buffer may be left alone until then:
 * the last batch was small enough that the ring holds what comes meanwhile.
 */
static bool queue_holds_ring(__u64 now)
{
	/* a record in the ring: the event and an 8-byte header, 8-byte aligned */
	unsigned long rec = ((sizeof(struct imds_connect_event) + 7) & ~7ul) + 8;
	unsigned long events = last_batch / sizeof(struct imds_connect_event) + 1;

	return outq_len && !queue_due(now) && events * rec * HOLD_RING_FRACTION <= ringbuf_bytes;
}

/* Take what the ring buffer holds into the queue; false on a failure (rc set). */
static bool drain_ring(struct ring_buffer *rb, int *rc)
{
	int err;

	err = ring_buffer__consume(rb);
	if (err < 0 && err != -EINTR && err != -EPIPE && err != -ENOBUFS) {
		*rc = fail("ring buffer consume", -err, NULL);
		return false;
	}
	return true;
}

/* Write what the pipe takes now; false once stdout is gone. */
static bool queue_flush(void)
{
	size_t off = 0;

	if (outq_len)
		last_batch = outq_len;
	while (off < outq_len && !stdout_closed) {
		ssize_t n = write(STDOUT_FILENO, outq + off, outq_len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			stdout_closed = true;
			exiting = 1;
			break;
		}
		off += (size_t)n;
	}
	if (off) {
		last_write_ns = now_ns(CLOCK_MONOTONIC);
		memmove(outq, outq + off, outq_len - off);
		outq_len -= off;
	}
	if (outq_len == 0 && outq_cap > 65536) {
		free(outq);	/* a burst costs memory only while it lasts */
		outq = NULL;
		outq_cap = 0;
	}
	return !stdout_closed;
}

/* exe[] holds components leaf first ("curl\0bin\0usr\0"): print them root first. */
static void print_text_exe(const struct imds_connect_event *e)
{
	unsigned int len = e->exe_len < IMDS_EXE_MAX ? e->exe_len : IMDS_EXE_MAX;
	unsigned int end = len, start;

	if (e->exe_error || len == 0) {
		printf("?");
		return;
	}
	if (e->exe_truncated)
		printf("...");
	while (end > 0) {
		start = end - 1;	/* the NUL after this component */
		while (start > 0 && e->exe[start - 1] != '\0')
			start--;
		printf("/%.*s", (int)(end - 1 - start), e->exe + start);
		end = start;
	}
}

static void print_text_event(const struct imds_connect_event *e)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int af = e->family == IMDS_AF_INET6 ? AF_INET6 : AF_INET;
	unsigned int i, len = e->argv_len;

	inet_ntop(af, e->saddr, s, sizeof(s));
	inet_ntop(af, e->daddr, d, sizeof(d));
	printf("pid=%u tid=%u ppid=%u(%.16s) uid=%u comm=%.16s netns=%u %s:%u -> %s:%u state=%u isn=%u exe=",
	       e->tgid, e->pid, e->ppid, e->parent_comm, e->uid, e->comm, e->netns_ino,
	       s, e->sport, d, e->dport, e->new_state, e->isn);
	print_text_exe(e);
	printf(" argv=");
	if (len > IMDS_ARGV_MAX)
		len = IMDS_ARGV_MAX;
	for (i = 0; i < len; i++) {
		char ch = e->argv[i];

		if (ch == '\0')
			ch = i + 1 == len ? '\0' : ' ';
		if (ch)
			putchar(ch);
	}
	printf("%s\n", e->argv_truncated ? "..." : "");
	fflush(stdout);
}

static int handle_event(void *ctx, void *data, size_t size)
{
	const struct imds_connect_event *e = data;

	(void)ctx;
	if (size < sizeof(*e) || e->type != IMDS_REC_CONNECT)
		return 0;
	if (text_mode) {
		print_text_event(e);
		return 0;
	}
	if (stdout_closed)
		return -EPIPE;
	if (!queue_put(e, sizeof(*e)))
		__atomic_fetch_add(&queue_lost, 1, __ATOMIC_RELAXED);
	/* queue full: stop here (this event is taken), the rest stays in the ring buffer */
	return queue_has_room(sizeof(*e)) ? 0 : -ENOBUFS;
}

/* Keep: the source key/state layouts of imds_connect.bpf.c. */
struct source_key {
	__u64 cgroup_id;
	__u32 netns_ino;
	__u32 _pad;
};

struct source_state {
	__u64 tat_ns;
	__u64 dropped;
	__u64 unsettled;
	__u64 lost;
};

/*
 * The IMDS_TOP_SOURCES sources with the most events not traced (budget drops + ring buffer
 * losses), into r->top (bounded map walk).
 */
static void top_sources(const struct imds_connect_bpf *obj, struct imds_stats_record *r)
{
	struct source_key key, next, *prev = NULL;
	struct source_state st;
	int fd = bpf_map__fd(obj->maps.sources);
	unsigned int i, j, n = 0, walked = 0;
	__u64 missed;

	while (walked++ < 2 * IMDS_MAX_SOURCES && bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &st))
			continue;
		missed = st.dropped + st.lost;
		if (missed == 0)
			continue;
		for (i = 0; i < n && r->top[i].dropped + r->top[i].lost >= missed; i++)
			;
		if (i >= IMDS_TOP_SOURCES)
			continue;
		for (j = n < IMDS_TOP_SOURCES ? n : IMDS_TOP_SOURCES - 1; j > i; j--)
			r->top[j] = r->top[j - 1];
		r->top[i].cgroup_id = key.cgroup_id;
		r->top[i].netns_ino = key.netns_ino;
		r->top[i]._pad = 0;
		r->top[i].dropped = st.dropped;
		r->top[i].lost = st.lost;
		if (n < IMDS_TOP_SOURCES)
			n++;
	}
	r->n_top = n;
}

static void emit_stats(const struct imds_connect_bpf *obj, bool final, bool force)
{
	static struct imds_stats_record last;
	struct imds_stats_record r = {
		.type = IMDS_REC_STATS,
		.size = sizeof(r),
		.lost = __atomic_load_n(&obj->bss->lost, __ATOMIC_RELAXED) + queue_lost,
		.emitted = __atomic_load_n(&obj->bss->emitted, __ATOMIC_RELAXED),
		.untracked = __atomic_load_n(&obj->bss->untracked, __ATOMIC_RELAXED),
		.track_failed = __atomic_load_n(&obj->bss->track_failed, __ATOMIC_RELAXED),
		.filtered = __atomic_load_n(&obj->bss->filtered, __ATOMIC_RELAXED),
		.over_budget = __atomic_load_n(&obj->bss->over_budget, __ATOMIC_RELAXED),
		.mono_ns = now_ns(CLOCK_MONOTONIC),
		.final = final,
	};
	unsigned int i;

	if (!force && r.lost == last.lost && r.emitted == last.emitted &&
	    r.untracked == last.untracked && r.track_failed == last.track_failed &&
	    r.filtered == last.filtered && r.over_budget == last.over_budget)
		return;
	if (r.over_budget || r.lost > queue_lost)	/* kernel losses are counted per source too */
		top_sources(obj, &r);
	last = r;
	if (text_mode) {
		printf("stats: lost=%llu emitted=%llu untracked=%llu track_failed=%llu filtered=%llu over_budget=%llu",
		       (unsigned long long)r.lost, (unsigned long long)r.emitted,
		       (unsigned long long)r.untracked, (unsigned long long)r.track_failed,
		       (unsigned long long)r.filtered, (unsigned long long)r.over_budget);
		for (i = 0; i < r.n_top; i++)
			printf(" source(netns=%u,cgroup=%llu)=%llu,lost=%llu", r.top[i].netns_ino,
			       (unsigned long long)r.top[i].cgroup_id, (unsigned long long)r.top[i].dropped,
			       (unsigned long long)r.top[i].lost);
		printf("%s\n", final ? " (final)" : "");
		fflush(stdout);
		return;
	}
	/* behind the events already queued, so the agent sees them in order */
	if (!queue_put(&r, sizeof(r)))
		return;	/* out of memory: the next one carries the same counters */
	queue_flush();
}

static int set_verdict(const struct imds_connect_bpf *obj, __u32 ino, __u32 verdict)
{
	int fd = bpf_map__fd(obj->maps.netns_verdict);

	if (verdict == 0) {
		if (bpf_map_delete_elem(fd, &ino) && errno != ENOENT)
			return -errno;
		return 0;
	}
	if (bpf_map_update_elem(fd, &ino, &verdict, BPF_ANY))
		return -errno;
	return 0;
}

/* One stdin line: "keep INO", "drop INO" or "forget INO". Bad lines: one stderr line each. */
static void handle_command(const struct imds_connect_bpf *obj, const char *line)
{
	char verb[16];
	unsigned long ino;
	char arg[32];
	__u32 verdict;
	int err;

	if (sscanf(line, "%15s %31s", verb, arg) != 2 || parse_ulong(arg, 0xffffffffUL, &ino) || ino == 0) {
		fprintf(stderr, PROG ": bad command on stdin: %.64s\n", line);
		return;
	}
	if (!strcmp(verb, "keep"))
		verdict = IMDS_NETNS_KEEP;
	else if (!strcmp(verb, "drop"))
		verdict = IMDS_NETNS_DROP;
	else if (!strcmp(verb, "forget"))
		verdict = 0;
	else {
		fprintf(stderr, PROG ": bad command on stdin: %.64s\n", line);
		return;
	}
	err = set_verdict(obj, (__u32)ino, verdict);
	if (err)
		fprintf(stderr, PROG ": netns verdict %s %lu failed: %s\n", verb, ino, strerror(-err));
}

/* Split what stdin gave into lines; false on EOF or a read error (the parent is gone). */
static bool read_commands(const struct imds_connect_bpf *obj)
{
	static char buf[4096];
	static size_t used;
	ssize_t r = read(STDIN_FILENO, buf + used, sizeof(buf) - 1 - used);
	char *line, *nl;

	if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
		return false;
	if (r < 0)
		return true;
	used += (size_t)r;
	buf[used] = '\0';
	line = buf;
	while ((nl = strchr(line, '\n')) != NULL) {
		*nl = '\0';
		if (*line)
			handle_command(obj, line);
		line = nl + 1;
	}
	used -= (size_t)(line - buf);
	memmove(buf, line, used);
	if (used == sizeof(buf) - 1) {
		fprintf(stderr, PROG ": stdin line too long, dropped\n");
		used = 0;
	}
	return true;
}

static bool stdin_is_pipe(void)
{
	struct stat st;

	if (fstat(STDIN_FILENO, &st))
		return false;
	return S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
}

int main(int argc, char **argv)
{
	struct imds_connect_bpf *obj = NULL;
	struct ring_buffer *rb = NULL;
	struct imds_ready_record ready = { .type = IMDS_REC_READY, .size = sizeof(ready) };
	struct sigaction sa = {};
	struct pollfd pfd[3];
	__u64 t0, t1, t2, t3, last_stats;
	bool watch_stdin;
	unsigned int i;
	int err, rc = 1;

	if (parse_args(argc, argv))
		return 2;
	set_defaults();
	if (!text_mode && isatty(STDOUT_FILENO))
		text_mode = true;

	sa.sa_handler = on_signal;	/* no SA_RESTART: poll() returns EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);	/* see EPIPE from write() instead */

	libbpf_set_print(libbpf_print_fn);

	if (access("/sys/kernel/btf/vmlinux", R_OK))
		return fail("open", errno, "kernel BTF /sys/kernel/btf/vmlinux is required for CO-RE");

	t0 = now_ns(CLOCK_MONOTONIC);
	obj = imds_connect_bpf__open();
	if (!obj)
		return fail("open", errno, NULL);

	for (i = 0; i < targets.n_v4; i++)
		obj->rodata->target_v4[i] = targets.v4[i];
	for (i = 0; i < targets.n_v6; i++)
		memcpy((void *)obj->rodata->target_v6[i], targets.v6[i], 16);
	for (i = 0; i < targets.n_ports; i++)
		obj->rodata->target_ports[i] = targets.ports[i];
	obj->rodata->n_target_v4 = targets.n_v4;
	obj->rodata->n_target_v6 = targets.n_v6;
	obj->rodata->n_target_ports = targets.n_ports;
	obj->rodata->netns_filter = netns_opts.filter;
	err = bpf_map__set_max_entries(obj->maps.events, (__u32)ringbuf_bytes);
	if (err) {
		rc = fail("ring buffer size", -err, NULL);
		goto cleanup;
	}
	if (budget_rate) {
		obj->rodata->budget_interval_ns = 1000000000ull / budget_rate;
		obj->rodata->budget_tolerance_ns = obj->rodata->budget_interval_ns * (budget_burst - 1);
	}

	t1 = now_ns(CLOCK_MONOTONIC);
	err = imds_connect_bpf__load(obj);
	if (err) {
		rc = fail("load", -err, perm_hint(-err));
		goto cleanup;
	}

	for (i = 0; i < netns_opts.n; i++) {
		err = set_verdict(obj, netns_opts.ino[i], netns_opts.verdict[i]);
		if (err) {
			rc = fail("netns verdict", -err, NULL);
			goto cleanup;
		}
	}

	t2 = now_ns(CLOCK_MONOTONIC);
	err = imds_connect_bpf__attach(obj);
	if (err) {
		rc = fail("attach", -err, perm_hint(-err));
		goto cleanup;
	}
	t3 = now_ns(CLOCK_MONOTONIC);

	rb = ring_buffer__new(bpf_map__fd(obj->maps.events), handle_event, NULL, NULL);
	if (!rb) {
		rc = fail("ring buffer setup", errno, NULL);
		goto cleanup;
	}

	ready.layout_version = IMDS_LAYOUT_VERSION;
	ready.loader_pid = (__u32)getpid();
	ready.open_us = (t1 - t0) / 1000;
	ready.load_us = (t2 - t1) / 1000;
	ready.attach_us = (t3 - t2) / 1000;
	ready.mono_ns = now_ns(CLOCK_MONOTONIC);
	ready.realtime_ns = now_ns(CLOCK_REALTIME);
	ready.argv_max = IMDS_ARGV_MAX;
	ready.ringbuf_bytes = (__u32)ringbuf_bytes;
	ready.budget_rate = (__u32)budget_rate;
	ready.budget_burst = budget_rate ? (__u32)budget_burst : 0;
	ready.netns_filter = netns_opts.filter;
	ready.exe_max = IMDS_EXE_MAX;
	if (text_mode) {
		printf("ready: load %.1f ms, attach %.1f ms; tracing %u IPv4, %u IPv6 address(es), %u port(s)\n",
		       ready.load_us / 1000.0, ready.attach_us / 1000.0,
		       targets.n_v4, targets.n_v6, targets.n_ports);
		fflush(stdout);
	} else if (!write_all(&ready, sizeof(ready))) {
		rc = 0;
		goto cleanup;
	}

	watch_stdin = stdin_is_pipe();
	if (!text_mode) {
		/* best effort: a larger pipe, then non-blocking writes through the queue */
		fcntl(STDOUT_FILENO, F_SETPIPE_SZ, PIPE_BYTES);
		fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
	}
	pfd[0].fd = ring_buffer__epoll_fd(rb);
	pfd[1].fd = STDOUT_FILENO;
	pfd[2].fd = STDIN_FILENO;
	pfd[2].events = POLLIN;
	last_stats = now_ns(CLOCK_MONOTONIC);

	while (!exiting) {
		/* a full queue leaves the ring buffer alone until the agent has read some */
		bool room = queue_has_room(sizeof(struct imds_connect_event));
		int n;
		__u64 now = now_ns(CLOCK_MONOTONIC);
		/* a waiting batch: the ring is drained when it is due, not at each event's wakeup */
		bool hold = room && queue_holds_ring(now);

		pfd[0].events = room && !hold ? POLLIN : 0;
		pfd[1].events = queue_due(now) ? POLLOUT : 0;
		n = poll(pfd, watch_stdin ? 3 : 2, queue_wait_ms(now, 1000));
		if (n < 0 && errno != EINTR) {
			rc = fail("poll", errno, NULL);
			goto cleanup;
		}
		if (n > 0 && pfd[1].revents && !queue_flush())
			break;	/* the agent is gone */
		now = now_ns(CLOCK_MONOTONIC);
		if (((n > 0 && (pfd[0].revents & POLLIN)) || (hold && queue_due(now))) && !drain_ring(rb, &rc))
			goto cleanup;
		if (n > 0 && watch_stdin && pfd[2].revents) {
			if (!read_commands(obj))
				break;	/* parent gone */
		}
		now = now_ns(CLOCK_MONOTONIC);
		if (!text_mode && queue_due(now) && !queue_flush())
			break;	/* the agent is gone */
		if (now - last_stats >= 1000000000ull) {
			emit_stats(obj, false, false);
			last_stats = now;
		}
	}

	/* drain what is left (blocking again: the agent reads until we exit), then the final counters */
	if (!text_mode)
		fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) & ~O_NONBLOCK);
	while (!stdout_closed && (outq_len || ring_buffer__consume(rb) == -ENOBUFS))
		if (!queue_flush())
			break;
	if (!stdout_closed)
		ring_buffer__consume(rb);
	if (!stdout_closed)
		emit_stats(obj, true, true);
	if (!text_mode)
		queue_flush();
	rc = 0;

cleanup:
	ring_buffer__free(rb);
	imds_connect_bpf__destroy(obj);
	return rc;
}
