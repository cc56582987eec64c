/* connect() rate probe for the benchmarks (compiled by bench/overhead.mjs into a temp dir).
 *   connect-loop server <addr> <port> <seconds>   accept and close until the time is up
 *   connect-loop client <addr> <port> <seconds> [rate]   connect + close (RST, no TIME_WAIT) in a loop,
 *                                                 at most rate per second when rate > 0
 * Prints {"connects":N,"seconds":S,"failures":F}. IPv4 only; bounded by time. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) { fprintf(stderr, "usage: %s server|client addr port seconds\n", argv[0]); return 2; }
  struct sockaddr_in sa; memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET; sa.sin_port = htons(atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
  double secs = atof(argv[4]);
  if (secs <= 0 || secs > 600) { fprintf(stderr, "seconds must be in (0, 600]\n"); return 2; }
  double end = now() + secs;
  long n = 0, fail = 0;
  if (strcmp(argv[1], "server") == 0) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) || listen(s, 4096)) { perror("bind/listen"); return 1; }
    struct timeval tv = { 0, 200000 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    printf("listening\n"); fflush(stdout);
    while (now() < end) { int c = accept(s, NULL, NULL); if (c >= 0) { close(c); n++; } }
    printf("{\"accepts\":%ld}\n", n);
    return 0;
  }
  struct linger lg = { 1, 0 };
  double rate = argc == 6 ? atof(argv[5]) : 0;
  double t0 = now();
  while (now() < end) {
    if (rate > 0) {
      double due = t0 + (n + fail) / rate, t = now();
      if (due > t) { struct timespec ts = { (time_t)(due - t), (long)(((due - t) - (time_t)(due - t)) * 1e9) }; nanosleep(&ts, NULL); continue; }
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0) { fail++; continue; }
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(c, (struct sockaddr *)&sa, sizeof sa) == 0) n++; else fail++;
    close(c);
  }
  printf("{\"connects\":%ld,\"seconds\":%.3f,\"failures\":%ld}\n", n, now() - t0, fail);
  return 0;
}
