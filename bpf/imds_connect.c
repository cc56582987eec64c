// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * imds_connect - loader for imds_connect.bpf.c.
 *
 * open -> set rodata (targets) -> load -> attach -> ready record -> poll loop.
 *
 * Output (stdout): the fixed-size binary records of imds_connect.h, each
 * written whole with write(2): one imds_ready_record once attached, one
 * imds_connect_event per connection, imds_stats_record every second when the
 * counters changed and once at exit. With --text, or when stdout is a
 * terminal, readable lines instead.
 *
 * Exits 0 on SIGTERM/SIGINT/SIGHUP, when stdout is closed (EPIPE) and, if
 * stdin is a pipe or socket, when stdin reaches EOF (the parent died).
 * On failure: one line "imds-connect: <step> failed: <reason>" on stderr
 * and exit status 1 (2 for usage errors).
 */
#include <arpa/inet.h>
#include <errno.h>
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
#include <bpf/libbpf.h>
#include "imds_connect.h"
#include "imds_connect.skel.h"

#define PROG "imds-connect"
#define RINGBUF_BYTES (1 << 20)	/* must match imds_connect.bpf.c */

static volatile sig_atomic_t exiting;
static bool verbose;
static bool text_mode;
static bool stdout_closed;

static struct {
	__u32 v4[IMDS_MAX_TARGETS];
	__u32 v6[IMDS_MAX_TARGETS][4];
	__u16 ports[IMDS_MAX_TARGETS];
	unsigned int n_v4, n_v6, n_ports;
	bool v4_set, v6_set, ports_set;
} targets;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: imds_connect [--ipv4 ADDR]... [--ipv6 ADDR]... [--port PORT]... [--text] [--verbose]\n"
		"Report the process behind each TCP connection to the given addresses/ports\n"
		"(default: 169.254.169.254, fd00:ec2::254, port 80). Each list given replaces\n"
		"its default; at most %d entries per list.\n"
		"Writes fixed-size binary records (imds_connect.h) to stdout, or text lines\n"
		"with --text or when stdout is a terminal.\n", IMDS_MAX_TARGETS);
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

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ipv4", required_argument, NULL, '4' },
		{ "ipv6", required_argument, NULL, '6' },
		{ "port", required_argument, NULL, 'p' },
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

static void print_text_event(const struct imds_connect_event *e)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int af = e->family == IMDS_AF_INET6 ? AF_INET6 : AF_INET;
	unsigned int i, len = e->argv_len;

	inet_ntop(af, e->saddr, s, sizeof(s));
	inet_ntop(af, e->daddr, d, sizeof(d));
	printf("pid=%u tid=%u ppid=%u(%.16s) uid=%u comm=%.16s netns=%u %s:%u -> %s:%u state=%u argv=",
	       e->tgid, e->pid, e->ppid, e->parent_comm, e->uid, e->comm, e->netns_ino,
	       s, e->sport, d, e->dport, e->new_state);
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
	return write_all(e, sizeof(*e)) ? 0 : -EPIPE;
}

static void emit_stats(const struct imds_connect_bpf *obj, bool final, bool force)
{
	static struct imds_stats_record last;
	struct imds_stats_record r = {
		.type = IMDS_REC_STATS,
		.size = sizeof(r),
		.lost = __atomic_load_n(&obj->bss->lost, __ATOMIC_RELAXED),
		.emitted = __atomic_load_n(&obj->bss->emitted, __ATOMIC_RELAXED),
		.untracked = __atomic_load_n(&obj->bss->untracked, __ATOMIC_RELAXED),
		.track_failed = __atomic_load_n(&obj->bss->track_failed, __ATOMIC_RELAXED),
		.mono_ns = now_ns(CLOCK_MONOTONIC),
		.final = final,
	};

	if (!force && r.lost == last.lost && r.emitted == last.emitted &&
	    r.untracked == last.untracked && r.track_failed == last.track_failed)
		return;
	last = r;
	if (text_mode) {
		printf("stats: lost=%llu emitted=%llu untracked=%llu track_failed=%llu%s\n",
		       (unsigned long long)r.lost, (unsigned long long)r.emitted,
		       (unsigned long long)r.untracked, (unsigned long long)r.track_failed,
		       final ? " (final)" : "");
		fflush(stdout);
		return;
	}
	write_all(&r, sizeof(r));
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
	struct pollfd pfd[2];
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

	t1 = now_ns(CLOCK_MONOTONIC);
	err = imds_connect_bpf__load(obj);
	if (err) {
		rc = fail("load", -err, perm_hint(-err));
		goto cleanup;
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
	ready.ringbuf_bytes = RINGBUF_BYTES;
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
	pfd[0].fd = ring_buffer__epoll_fd(rb);
	pfd[0].events = POLLIN;
	pfd[1].fd = STDIN_FILENO;
	pfd[1].events = POLLIN;
	last_stats = now_ns(CLOCK_MONOTONIC);

	while (!exiting) {
		int n = poll(pfd, watch_stdin ? 2 : 1, 1000);
		__u64 now;

		if (n < 0 && errno != EINTR) {
			rc = fail("poll", errno, NULL);
			goto cleanup;
		}
		if (n > 0 && pfd[0].revents) {
			err = ring_buffer__consume(rb);
			if (err < 0 && err != -EINTR && err != -EPIPE) {
				rc = fail("ring buffer consume", -err, NULL);
				goto cleanup;
			}
		}
		if (n > 0 && watch_stdin && pfd[1].revents) {
			char buf[256];
			ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));

			if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
				break;	/* parent gone */
		}
		now = now_ns(CLOCK_MONOTONIC);
		if (now - last_stats >= 1000000000ull) {
			emit_stats(obj, false, false);
			last_stats = now;
		}
	}

	/* drain what is left, then the final counters */
	if (!stdout_closed)
		ring_buffer__consume(rb);
	if (!stdout_closed)
		emit_stats(obj, true, true);
	rc = 0;

cleanup:
	ring_buffer__free(rb);
	imds_connect_bpf__destroy(obj);
	return rc;
}
