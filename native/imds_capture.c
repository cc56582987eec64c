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
 * Output on stdout, records framed as the eBPF loader's are (include/imds_frame.h: {u32 type, u32 size}
 * in host byte order, size counting the whole record), then the payload:
 *   1 OPEN    payload: the link type name (ETHERNET, LINKTYPE_LINUX_SLL, LINUX_SLL2, RAW, NULL)
 *   2 PACKET  payload: [u64 capture time in microseconds since the epoch, BE][frame bytes]
 *   3 STATS   payload: [u32 packets received][u32 dropped by the kernel][u32 dropped by the interface]
 *             [u32 dropped here, the output queue being full]
 * Exit status: 0 on SIGTERM/SIGINT or when stdin or stdout closes; 2 bad arguments; 3 the device
 * cannot be opened; 4 capture failed (e.g. the interface went away). One line on stderr says why.
 *
 *   imds_capture DEVICE FILTER BUFFER_BYTES
 *
 * BUFFER_BYTES is the kernel ring (pcap_set_buffer_size): the agent passes DEFAULTS.pcapBufferBytes
 * (agent/src/defaults.ts, where its size is explained); the helper keeps no default of its own.
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
#include <linux/types.h>
#include "../include/imds_frame.h"

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

/* Write what the pipe takes now. Returns 0, or -1 when the reader is gone (the caller stops). */
static int flush_queue(void)
{
	size_t off = 0;
	ssize_t n;

	while (off < queue_len) {
		n = write(STDOUT_FILENO, queue + off, queue_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0)
			return -1;
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
	return 0;
}

/* Payload integers are big endian (STATS counters, PACKET times): only the frame header is host order. */
static void put32(unsigned char *b, uint32_t v)
{
	b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v;
}

static void write_record(int type, const void *a, size_t alen, const void *b, size_t blen)
{
	size_t total = sizeof(struct imds_frame_hdr) + alen + blen;
	struct imds_frame_hdr hdr;
	unsigned char *out;

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
	out = queue + queue_len;
	hdr.type = (__u32)type;
	hdr.size = (__u32)total;
	memcpy(out, &hdr, sizeof(hdr));
	if (alen) memcpy(out + sizeof(hdr), a, alen);
	if (blen) memcpy(out + sizeof(hdr) + alen, b, blen);
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
	const char *dev, *filter, *link;
	char errbuf[PCAP_ERRBUF_SIZE] = "";
	struct sigaction sa = { .sa_handler = on_signal };
	struct bpf_program prog;
	struct pollfd fds[3];
	double last_stats;
	pcap_t *p = NULL;
	int bufsize, rc, n, got, i, err = 0;
	char c;

	if (argc != 4 || (bufsize = atoi(argv[3])) <= 0) {
		fprintf(stderr, "usage: imds_capture DEVICE FILTER BUFFER_BYTES\n");
		return 2;
	}
	dev = argv[1];
	filter = argv[2];

	signal(SIGPIPE, SIG_IGN);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* A deeper pipe absorbs bursts while the agent is busy. */
	fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1 << 20);

	p = pcap_create(dev, errbuf);
	if (!p) {
		fprintf(stderr, "cannot capture on %s: %s\n", dev, errbuf);
		err = 3;
		goto cleanup;
	}
	if (pcap_set_snaplen(p, 65535) || pcap_set_promisc(p, 0) || pcap_set_timeout(p, 10)
	    || pcap_set_buffer_size(p, bufsize) || pcap_set_immediate_mode(p, 0)) {
		fprintf(stderr, "cannot capture on %s: setting capture options failed\n", dev);
		err = 3;
		goto cleanup;
	}
	rc = pcap_activate(p);
	if (rc < 0) {
		fprintf(stderr, "cannot capture on %s: %s\n", dev,
			rc == PCAP_ERROR ? pcap_geterr(p) : pcap_statustostr(rc));
		err = 3;
		goto cleanup;
	}
	if (strcmp(dev, "any") == 0)
		pcap_set_datalink(p, DLT_LINUX_SLL2); /* names each packet's interface; SLL if refused */
	if (pcap_compile(p, &prog, filter, 1, PCAP_NETMASK_UNKNOWN)) {
		fprintf(stderr, "cannot capture on %s: filter \"%s\": %s\n", dev, filter, pcap_geterr(p));
		err = 3;
		goto cleanup;
	}
	rc = pcap_setfilter(p, &prog);
	pcap_freecode(&prog);
	if (rc) {
		fprintf(stderr, "cannot capture on %s: filter \"%s\": %s\n", dev, filter, pcap_geterr(p));
		err = 3;
		goto cleanup;
	}
	link = link_name(pcap_datalink(p));
	if (!link) {
		fprintf(stderr, "cannot capture on %s: unsupported link type %d\n", dev, pcap_datalink(p));
		err = 3;
		goto cleanup;
	}
	if (pcap_setnonblock(p, 1, errbuf) != 0) {
		fprintf(stderr, "cannot capture on %s: %s\n", dev, errbuf);
		err = 3;
		goto cleanup;
	}
	write_record(REC_OPEN, link, strlen(link), NULL, 0);

	if (flush_queue())
		goto cleanup; /* the reader is gone: nothing to do */
	fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
	fds[0] = (struct pollfd){ .fd = pcap_get_selectable_fd(p), .events = POLLIN };
	fds[1] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
	fds[2] = (struct pollfd){ .fd = STDOUT_FILENO, .events = 0 };
	last_stats = now_s();
	while (!stopping) {
		/* TPACKET_V3: the kernel wakes poll when a block is retired (full, or after the 10 ms timeout). */
		fds[2].events = queue_len ? POLLOUT : 0;
		n = poll(fds, 3, 1000);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "capture on %s failed: poll: %s\n", dev, strerror(errno));
			err = 4;
			goto cleanup;
		}
		if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) && read(STDIN_FILENO, &c, 1) <= 0) {
			/* The agent is stopping: hand over what the kernel still holds (blocks retire
			 * within the 10 ms timeout), then exit. */
			for (i = 0; i < 5; i++) {
				poll(fds, 1, 10);
				if (pcap_dispatch(p, -1, on_packet, NULL) == PCAP_ERROR)
					break;
			}
			break;
		}
		got = pcap_dispatch(p, -1, on_packet, NULL);
		if (got == PCAP_ERROR) {
			fprintf(stderr, "capture on %s failed: %s\n", dev, pcap_geterr(p));
			err = 4;
			goto cleanup;
		}
		if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			fprintf(stderr, "capture on %s failed: the interface went away\n", dev);
			err = 4;
			goto cleanup;
		}
		if (now_s() - last_stats >= 1.0) {
			write_stats(p, 0);
			last_stats = now_s();
		}
		if (flush_queue())
			goto cleanup; /* the reader is gone: exit quietly */
	}
	write_stats(p, 1);
	fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) & ~O_NONBLOCK);
	flush_queue(); /* the last records; a reader already gone loses nothing it would have read */

cleanup:
	if (p)
		pcap_close(p);
	free(queue);
	return err;
}
