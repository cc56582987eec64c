// SPDX-License-Identifier: Apache-2.0
/*
 * imds_capture: libpcap capture of the metadata service traffic, streamed to the agent.
 *
 * Why a helper and not the in-process binding: the binding opens libpcap in immediate mode with a
 * 65535-byte snap length, so the kernel ring (TPACKET_V2) holds only buffer/64 KiB frames and a
 * burst of a few hundred packets overflows it; and it aborts the whole process when a named
 * interface disappears. Here libpcap runs with TPACKET_V3 blocks (packets packed by size) retired
 * every 10 ms, `any` uses DLT_LINUX_SLL2 (which names the interface of each packet), drops are
 * counted with pcap_stats, and a lost interface only ends this process (the agent restarts it).
 *
 * Output on stdout, records of [u8 type][u32 length, big endian][payload]:
 *   1 OPEN    payload: the link type name (ETHERNET, LINKTYPE_LINUX_SLL, LINUX_SLL2, RAW, NULL)
 *   2 PACKET  payload: [u64 capture time in microseconds since the epoch, BE][frame bytes]
 *   3 STATS   payload: [u32 packets received][u32 dropped by the kernel][u32 dropped by the interface]
 *             [u32 dropped here, the output queue being full]
 * Exit status: 0 on SIGTERM/SIGINT or when stdin or stdout closes; 2 bad arguments; 3 the device
 * cannot be opened; 4 capture failed (e.g. the interface went away). One line on stderr says why.
 *
 *   imds_capture DEVICE FILTER [BUFFER_BYTES]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef DLT_LINUX_SLL2
#define DLT_LINUX_SLL2 276
#endif

enum { REC_OPEN = 1, REC_PACKET = 2, REC_STATS = 3 };

static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

/*
 * Output queue. stdout is non-blocking: what the agent has not read yet waits here (bounded), so the
 * kernel ring is drained at once even while the agent is busy, and a burst costs heap memory only
 * for as long as it lasts. Records beyond the bound are dropped and counted (queue_dropped).
 */
#define QUEUE_MAX (16u << 20)
static unsigned char *queue;
static size_t queue_len, queue_cap;
static uint32_t queue_dropped;

/* Write what the pipe takes now; exit quietly when the reader is gone. */
static void flush_queue(void)
{
	size_t off = 0;
	while (off < queue_len) {
		ssize_t n = write(STDOUT_FILENO, queue + off, queue_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0)
			exit(0);
		off += (size_t)n;
	}
	if (off) {
		memmove(queue, queue + off, queue_len - off);
		queue_len -= off;
	}
	if (queue_len == 0 && queue_cap > 65536) {
		free(queue);	/* a burst costs memory only while it lasts */
		queue = NULL;
		queue_cap = 0;
	}
}

static void put32(unsigned char *b, uint32_t v)
{
	b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v;
}

static void write_record(int type, const void *a, size_t alen, const void *b, size_t blen)
{
	size_t total = 5 + alen + blen;
	if (queue_len + total > QUEUE_MAX) {
		queue_dropped++;
		return;
	}
	if (queue_len + total > queue_cap) {
		size_t cap = queue_cap ? queue_cap : 65536;
		while (cap < queue_len + total) cap *= 2;
		unsigned char *q = realloc(queue, cap);
		if (!q) {
			queue_dropped++;
			return;
		}
		queue = q;
		queue_cap = cap;
	}
	unsigned char *out = queue + queue_len;
	out[0] = (unsigned char)type;
	put32(out + 1, (uint32_t)(alen + blen));
	if (alen) memcpy(out + 5, a, alen);
	if (blen) memcpy(out + 5 + alen, b, blen);
	queue_len += total;
}

static void on_packet(u_char *user, const struct pcap_pkthdr *h, const u_char *bytes)
{
	(void)user;
	uint64_t us = (uint64_t)h->ts.tv_sec * 1000000u + (uint64_t)h->ts.tv_usec;
	unsigned char ts[8];
	for (int i = 0; i < 8; i++) ts[i] = (unsigned char)(us >> (56 - 8 * i));
	write_record(REC_PACKET, ts, sizeof(ts), bytes, h->caplen);
}

static const char *link_name(int dlt)
{
	switch (dlt) {
	case DLT_EN10MB: return "ETHERNET";
	case DLT_LINUX_SLL: return "LINKTYPE_LINUX_SLL";
	case DLT_LINUX_SLL2: return "LINUX_SLL2";
	case DLT_RAW: return "RAW";
	case DLT_NULL: return "NULL";
	default: return NULL;
	}
}

static void write_stats(pcap_t *p, int always)
{
	static struct pcap_stat last;
	struct pcap_stat st;
	if (pcap_stats(p, &st) != 0)
		return;
	if (!always && st.ps_recv == last.ps_recv && st.ps_drop == last.ps_drop && st.ps_ifdrop == last.ps_ifdrop)
		return; /* nothing new: stay quiet when idle */
	last = st;
	unsigned char b[16];
	put32(b, st.ps_recv);
	put32(b + 4, st.ps_drop);
	put32(b + 8, st.ps_ifdrop);
	put32(b + 12, queue_dropped);
	write_record(REC_STATS, b, sizeof(b), NULL, 0);
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: imds_capture DEVICE FILTER [BUFFER_BYTES]\n");
		return 2;
	}
	const char *dev = argv[1], *filter = argv[2];
	int bufsize = argc == 4 ? atoi(argv[3]) : 8 * 1024 * 1024;
	char errbuf[PCAP_ERRBUF_SIZE] = "";
	struct bpf_program prog;

	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* A deeper pipe absorbs bursts while the agent is busy. */
	fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1 << 20);

	pcap_t *p = pcap_create(dev, errbuf);
	if (!p) {
		fprintf(stderr, "cannot capture on %s: %s\n", dev, errbuf);
		return 3;
	}
	if (pcap_set_snaplen(p, 65535) || pcap_set_promisc(p, 0) || pcap_set_timeout(p, 10)
	    || pcap_set_buffer_size(p, bufsize) || pcap_set_immediate_mode(p, 0)) {
		fprintf(stderr, "cannot capture on %s: setting capture options failed\n", dev);
		return 3;
	}
	int rc = pcap_activate(p);
	if (rc < 0) {
		fprintf(stderr, "cannot capture on %s: %s\n", dev,
			rc == PCAP_ERROR ? pcap_geterr(p) : pcap_statustostr(rc));
		return 3;
	}
	if (strcmp(dev, "any") == 0)
		pcap_set_datalink(p, DLT_LINUX_SLL2); /* names each packet's interface; SLL if refused */
	if (pcap_compile(p, &prog, filter, 1, PCAP_NETMASK_UNKNOWN) || pcap_setfilter(p, &prog)) {
		fprintf(stderr, "cannot capture on %s: filter \"%s\": %s\n", dev, filter, pcap_geterr(p));
		return 3;
	}
	pcap_freecode(&prog);
	const char *link = link_name(pcap_datalink(p));
	if (!link) {
		fprintf(stderr, "cannot capture on %s: unsupported link type %d\n", dev, pcap_datalink(p));
		return 3;
	}
	if (pcap_setnonblock(p, 1, errbuf) != 0) {
		fprintf(stderr, "cannot capture on %s: %s\n", dev, errbuf);
		return 3;
	}
	write_record(REC_OPEN, link, strlen(link), NULL, 0);

	flush_queue();
	fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
	struct pollfd fds[3] = {
		{ .fd = pcap_get_selectable_fd(p), .events = POLLIN },
		{ .fd = STDIN_FILENO, .events = POLLIN },
		{ .fd = STDOUT_FILENO, .events = 0 },
	};
	double last_stats = now_s();
	while (!stopping) {
		/* TPACKET_V3: the kernel wakes poll when a block is retired (full, or after the 10 ms timeout). */
		fds[2].events = queue_len ? POLLOUT : 0;
		int n = poll(fds, 3, 1000);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "capture on %s failed: poll: %s\n", dev, strerror(errno));
			return 4;
		}
		if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			char c;
			if (read(STDIN_FILENO, &c, 1) <= 0) {
				/* The agent is stopping: hand over what the kernel still holds (blocks retire
				 * within the 10 ms timeout), then exit. */
				for (int i = 0; i < 5; i++) {
					poll(fds, 1, 10);
					if (pcap_dispatch(p, -1, on_packet, NULL) == PCAP_ERROR)
						break;
				}
				break;
			}
		}
		int got = pcap_dispatch(p, -1, on_packet, NULL);
		if (got == PCAP_ERROR) {
			fprintf(stderr, "capture on %s failed: %s\n", dev, pcap_geterr(p));
			return 4;
		}
		if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			fprintf(stderr, "capture on %s failed: the interface went away\n", dev);
			return 4;
		}
		if (now_s() - last_stats >= 1.0) {
			write_stats(p, 0);
			last_stats = now_s();
		}
		flush_queue();
	}
	write_stats(p, 1);
	pcap_close(p);
	fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) & ~O_NONBLOCK);
	flush_queue();
	return 0;
}
