// SPDX-License-Identifier: Apache-2.0
/*
 * imds_notify: the agent's sd_notify(3). Node.js has no unix datagram sockets, so the agent starts
 * this helper once and writes notification lines on its stdin ("READY=1", "STATUS=…",
 * "STOPPING=1"); each line is sent as one datagram to $NOTIFY_SOCKET. It stays alive until stdin
 * closes: systemd attributes a notification to its unit through the sender's cgroup, which it can
 * only look up while the sender lives (a short-lived `systemd-notify` races with that). The unit
 * sets NotifyAccess=all, since the sender is not the main process.
 *
 * Exit status: 0 when stdin closes; 1 when NOTIFY_SOCKET is unset or unusable, or a send failed.
 * One line on stderr says why.
 *
 *   NOTIFY_SOCKET=/run/systemd/notify imds_notify < lines
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t salen;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int fd = -1, err = 0;

	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "imds_notify: NOTIFY_SOCKET is unset or not a socket path\n");
		return 1;
	}
	memcpy(sa.sun_path, path, strlen(path));
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	salen = offsetof(struct sockaddr_un, sun_path) + strlen(path);

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "imds_notify: socket: %s\n", strerror(errno));
		return 1;
	}
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		if (n == 0)
			continue;
		if (sendto(fd, line, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0) {
			fprintf(stderr, "imds_notify: send to %s: %s\n", path, strerror(errno));
			err = 1;
			goto cleanup;
		}
	}
cleanup:
	free(line);
	close(fd);
	return err;
}
