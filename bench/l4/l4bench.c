// l4bench: one load generator and one server used against every system in
// bench/l4 (direct, warren-node, HAProxy, nginx stream, stunnel), so the
// comparison is apples to apples. Plain C, epoll/threads, no dependencies.
//
//   l4bench server HOST:PORT
//       First byte of each connection picks the mode:
//         'S' sink: discard everything; on EOF reply with the 8-byte
//             little-endian count of bytes received, then close.
//         'E' echo: write back every byte received (1 KB request -> 1 KB reply).
//   l4bench tput  -c HOST:PORT [-s SOCKS] [-b BINDIP] [-n STREAMS] [-t SECS]
//   l4bench rr    -c HOST:PORT [-s SOCKS] [-b BINDIP] [-r RATE] [-t SECS] [-z SIZE]
//   l4bench cps   -c HOST:PORT [-s SOCKS] [-b BINDIP] [-k THREADS] [-t SECS] [-z SIZE]
//   l4bench idle  -c HOST:PORT [-s SOCKS] [-b BINDIP] [-n CONNS]
//       opens CONNS connections, each proves end to end reachability with a
//       1-byte echo, prints "READY <n>" and holds them until stdin closes.
//
// With -s the client connects to a SOCKS5 entry (RFC 1928, CONNECT, no auth)
// and asks it for -c; otherwise it connects to -c directly. -b binds the
// client's source address (warren-node names the source workload by it).
// Output: one line of key=value pairs on stdout.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in g_target, g_socks, g_bind;
static int g_use_socks = 0, g_use_bind = 0;

static void die(const char* m) {
  perror(m);
  exit(2);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void parse_addr(const char* s, struct sockaddr_in* a) {
  char host[64];
  const char* colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) {
    fprintf(stderr, "bad address %s\n", s);
    exit(2);
  }
  memcpy(host, s, colon - s);
  host[colon - s] = 0;
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
    fprintf(stderr, "bad host %s\n", host);
    exit(2);
  }
}

static int write_all(int fd, const void* buf, size_t n) {
  const char* p = buf;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}
static int read_all(int fd, void* buf, size_t n) {
  char* p = buf;
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

// Connects (through SOCKS5 when configured); returns fd or -1.
static int open_conn(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (g_use_bind) {
    setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr*)&g_bind, sizeof g_bind) < 0) goto fail;
  }
  struct sockaddr_in* dst = g_use_socks ? &g_socks : &g_target;
  if (connect(fd, (struct sockaddr*)dst, sizeof *dst) < 0) goto fail;
  if (g_use_socks) {
    // Greeting and CONNECT in one write (pipelined, like curl and most clients).
    unsigned char req[3 + 10] = {5, 1, 0, 5, 1, 0, 1};
    memcpy(req + 7, &g_target.sin_addr, 4);
    memcpy(req + 11, &g_target.sin_port, 2);
    if (write_all(fd, req, sizeof req) < 0) goto fail;
    unsigned char rep[4];
    if (read_all(fd, rep, 2) < 0 || rep[0] != 5 || rep[1] != 0) goto fail;  // method reply
    if (read_all(fd, rep, 4) < 0 || rep[0] != 5 || rep[1] != 0) goto fail;  // VER REP RSV ATYP
    int extra = rep[3] == 1 ? 6 : rep[3] == 4 ? 18 : -1;
    if (extra < 0) goto fail;
    unsigned char tail[18];
    if (read_all(fd, tail, (size_t)extra) < 0) goto fail;
  }
  return fd;
fail:
  close(fd);
  return -1;
}

// ---------------------------------------------------------------- server
struct sconn {
  int fd;
  int mode;  // 0 unknown, 'S', 'E'
  uint64_t count;
  char* pend;
  size_t pend_off, pend_len;
};

static void server_main(const char* addr) {
  struct sockaddr_in a;
  parse_addr(addr, &a);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr*)&a, sizeof a) < 0) die("server bind");
  if (listen(lfd, 4096) < 0) die("listen");
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  static char buf[262144];
  struct epoll_event evs[256];
  fprintf(stderr, "server listening on %s\n", addr);
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      struct sconn* c = evs[i].data.ptr;
      if (!c) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      int closeit = 0;
      if (c->pend_len) {  // flush pending echo bytes
        ssize_t w = write(c->fd, c->pend + c->pend_off, c->pend_len);
        if (w > 0) {
          c->pend_off += (size_t)w;
          c->pend_len -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN) {
          closeit = 1;
        }
        if (!closeit && c->pend_len == 0) {
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
        }
        if (!closeit) continue;
      }
      while (!closeit) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r < 0) {
          if (errno != EAGAIN && errno != EINTR) closeit = 1;
          break;
        }
        if (r == 0) {
          if (c->mode == 'S') {
            uint64_t v = c->count;
            int fl = fcntl(c->fd, F_GETFL);
            fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
            write_all(c->fd, &v, 8);
          }
          closeit = 1;
          break;
        }
        char* p = buf;
        if (!c->mode) {
          c->mode = p[0];
          p++;
          r--;
        }
        if (c->mode == 'S') {
          c->count += (uint64_t)r;
        } else if (r > 0) {
          ssize_t w = write(c->fd, p, (size_t)r);
          if (w < 0 && errno != EAGAIN) {
            closeit = 1;
            break;
          }
          if (w < 0) w = 0;
          if (w < r) {
            size_t left = (size_t)(r - w);
            c->pend = realloc(c->pend, left);
            memcpy(c->pend, p + w, left);
            c->pend_off = 0;
            c->pend_len = left;
            struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
            break;
          }
        }
        if ((size_t)r + (p != buf) < sizeof buf) break;  // drained
      }
      if (closeit) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        free(c->pend);
        free(c);
      }
    }
  }
}

// ---------------------------------------------------------------- tput
static double g_secs = 5;
struct tput_arg {
  uint64_t received;
  double end;
  int ok;
};
static double g_t0;
static void* tput_thread(void* p) {
  struct tput_arg* a = p;
  int fd = open_conn();
  if (fd < 0) return NULL;
  static __thread char buf[131072];
  memset(buf, 'x', sizeof buf);
  buf[0] = 'S';
  if (write_all(fd, buf, 1) < 0) goto out;
  buf[0] = 'x';
  double deadline = g_t0 + g_secs;
  while (now_s() < deadline)
    if (write_all(fd, buf, sizeof buf) < 0) goto out;
  shutdown(fd, SHUT_WR);
  uint64_t v;
  if (read_all(fd, &v, 8) == 0) {
    a->received = v;
    a->end = now_s();
    a->ok = 1;
  }
out:
  close(fd);
  return NULL;
}
static void tput_main(int streams) {
  pthread_t th[256];
  struct tput_arg args[256];
  memset(args, 0, sizeof args);
  g_t0 = now_s();
  for (int i = 0; i < streams; i++) pthread_create(&th[i], NULL, tput_thread, &args[i]);
  uint64_t total = 0;
  double end = g_t0;
  int ok = 0;
  for (int i = 0; i < streams; i++) {
    pthread_join(th[i], NULL);
    if (args[i].ok) {
      ok++;
      total += args[i].received;
      if (args[i].end > end) end = args[i].end;
    }
  }
  double secs = end - g_t0;
  printf("streams=%d ok=%d bytes=%llu secs=%.3f gbps=%.3f\n", streams, ok, (unsigned long long)total,
         secs, ok && secs > 0 ? total * 8 / secs / 1e9 : 0.0);
}

// ---------------------------------------------------------------- rr
static int cmp_i64(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return x < y ? -1 : x > y;
}
static void rr_main(int rate, int size) {
  int fd = open_conn();
  if (fd < 0) {
    printf("error=connect\n");
    return;
  }
  char* req = malloc((size_t)size + 1);
  char* rep = malloc((size_t)size);
  memset(req, 'r', (size_t)size + 1);
  req[0] = 'E';
  // Warm-up request (includes mode byte), not recorded.
  if (write_all(fd, req, (size_t)size + 1) < 0 || read_all(fd, rep, (size_t)size) < 0) {
    printf("error=warmup\n");
    return;
  }
  req[0] = 'r';
  long total = (long)(rate * g_secs);
  int64_t* lat = malloc(sizeof(int64_t) * (size_t)total);
  int64_t interval = 1000000000LL / rate;
  int64_t start = now_ns() + 1000000;
  int64_t last_done = 0;
  long n = 0, errors = 0;
  for (long i = 0; i < total; i++) {
    int64_t sched = start + i * interval;
    struct timespec ts = {sched / 1000000000LL, sched % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    int64_t t0 = now_ns();
    // Behind schedule because the previous reply was late: charge from the
    // scheduled time (no coordinated omission). Else from the actual send.
    int64_t from = last_done > sched ? sched : t0;
    if (write_all(fd, req, (size_t)size) < 0 || read_all(fd, rep, (size_t)size) < 0) {
      errors++;
      break;
    }
    last_done = now_ns();
    lat[n++] = last_done - from;
  }
  int64_t elapsed = now_ns() - start;
  qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
#define PCT(p) (n ? lat[(long)((n - 1) * (p))] / 1000.0 : 0.0)
  printf("requests=%ld errors=%ld rate=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f\n", n,
         errors, n / (elapsed / 1e9), PCT(0.50), PCT(0.90), PCT(0.99), PCT(0.999), n ? lat[n - 1] / 1000.0 : 0.0);
  close(fd);
}

// ---------------------------------------------------------------- cps
static int g_size = 1024;
struct cps_arg {
  long ok, err;
};
static void* cps_thread(void* p) {
  struct cps_arg* a = p;
  char* req = malloc((size_t)g_size + 1);
  char* rep = malloc((size_t)g_size);
  memset(req, 'c', (size_t)g_size + 1);
  req[0] = 'E';
  double deadline = g_t0 + g_secs;
  while (now_s() < deadline) {
    int fd = open_conn();
    if (fd < 0) {
      a->err++;
      continue;
    }
    if (write_all(fd, req, (size_t)g_size + 1) < 0 || read_all(fd, rep, (size_t)g_size) < 0)
      a->err++;
    else
      a->ok++;
    close(fd);
  }
  return NULL;
}
static void cps_main(int threads) {
  pthread_t th[256];
  struct cps_arg args[256];
  memset(args, 0, sizeof args);
  g_t0 = now_s();
  for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, cps_thread, &args[i]);
  long ok = 0, err = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    ok += args[i].ok;
    err += args[i].err;
  }
  double secs = now_s() - g_t0;
  printf("threads=%d ok=%ld errors=%ld secs=%.3f cps=%.1f\n", threads, ok, err, secs, ok / secs);
}

// ---------------------------------------------------------------- idle
struct idle_arg {
  int* fds;
  int want, ok, err;
};
static void* idle_thread(void* p) {
  struct idle_arg* a = p;
  for (int i = 0; i < a->want && a->err <= 100; i++) {
    int fd = open_conn();
    char b[2] = {'E', 'i'}, r;
    if (fd >= 0 && write_all(fd, b, 2) == 0 && read_all(fd, &r, 1) == 0) {
      a->fds[a->ok++] = fd;
    } else {
      a->err++;
      if (fd >= 0) close(fd);
    }
  }
  return NULL;
}
// Opens the connections from `threads` threads (the peers' TLS handshakes are
// the slow part), prints READY, holds them until stdin closes, then checks
// every one still echoes.
static void idle_main(int conns, int threads) {
  pthread_t th[256];
  struct idle_arg args[256];
  if (threads > 256) threads = 256;
  if (threads > conns) threads = conns;
  double t0 = now_s();
  for (int i = 0; i < threads; i++) {
    args[i].want = conns / threads + (i < conns % threads);
    args[i].fds = malloc(sizeof(int) * (size_t)args[i].want);
    args[i].ok = args[i].err = 0;
    pthread_create(&th[i], NULL, idle_thread, &args[i]);
  }
  int ok = 0, err = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    ok += args[i].ok;
    err += args[i].err;
  }
  printf("READY ok=%d errors=%d open_secs=%.2f\n", ok, err, now_s() - t0);
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  int alive = 0;
  for (int t = 0; t < threads; t++)
    for (int i = 0; i < args[t].ok; i++) {
      int fd = args[t].fds[i];
      char b = 'j', r;
      struct pollfd pf = {fd, POLLIN, 0};
      if (write_all(fd, &b, 1) == 0 && poll(&pf, 1, 2000) == 1 && read(fd, &r, 1) == 1) alive++;
      close(fd);
    }
  printf("ALIVE alive=%d of=%d\n", alive, ok);
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL);
  if (argc < 2) {
    fprintf(stderr, "usage: l4bench server|tput|rr|cps|idle ...\n");
    return 2;
  }
  const char* mode = argv[1];
  if (!strcmp(mode, "server")) {
    if (argc < 3) return 2;
    server_main(argv[2]);
    return 0;
  }
  int streams = 1, rate = 1000, threads = 8, conns = 10000;
  int opt;
  optind = 2;
  while ((opt = getopt(argc, argv, "c:s:b:n:t:r:z:k:")) != -1) {
    switch (opt) {
      case 'c': parse_addr(optarg, &g_target); break;
      case 's': parse_addr(optarg, &g_socks); g_use_socks = 1; break;
      case 'b':
        memset(&g_bind, 0, sizeof g_bind);
        g_bind.sin_family = AF_INET;
        inet_pton(AF_INET, optarg, &g_bind.sin_addr);
        g_use_bind = 1;
        break;
      case 'n': streams = conns = atoi(optarg); break;
      case 't': g_secs = atof(optarg); break;
      case 'r': rate = atoi(optarg); break;
      case 'z': g_size = atoi(optarg); break;
      case 'k': threads = atoi(optarg); break;
      default: return 2;
    }
  }
  if (!strcmp(mode, "tput")) tput_main(streams);
  else if (!strcmp(mode, "rr")) rr_main(rate, g_size);
  else if (!strcmp(mode, "cps")) cps_main(threads);
  else if (!strcmp(mode, "idle")) idle_main(conns, threads);
  else return 2;
  return 0;
}
