// l7bench: the HTTP/1.1 load generator and backend used for every system in
// bench/l7 (direct, warren L4, warren waypoint, nginx, HAProxy), so the
// comparison is apples to apples. Plain C, one epoll thread, no dependencies.
//
//   l7bench server HOST:PORT [HOST:PORT...]
//       HTTP/1.1 keep-alive server: every request head (no request bodies)
//       gets "200 OK" with a fixed body (-z bytes, default 64). On SIGUSR1 it
//       prints "accepted=<connections accepted so far>" on stderr.
//   l7bench sat  -c HOST:PORT [-s SOCKS] [-b BINDIP] [-n CONNS] [-t SECS]
//       closed loop: CONNS keep-alive connections, one request in flight on
//       each, the next sent as soon as the previous reply is complete.
//   l7bench rate -c HOST:PORT [-s SOCKS] [-b BINDIP] [-n CONNS] [-r RATE] [-t SECS]
//       open loop: RATE requests/s on a fixed schedule over CONNS connections
//       (request i on connection i % CONNS; a busy connection queues it).
//       Latency counts from the scheduled time, so a late reply also charges
//       the requests queued behind it (no coordinated omission).
//
// HTTP/2: the server answers HTTP/2 (h2c, prior knowledge) on any connection
// that starts with the HTTP/2 preface, HTTP/1.1 otherwise. The client speaks
// h2c with -2, keeping -m STREAMS requests in flight per connection in sat
// mode (default 10) and up to -m (default 100) per connection in rate mode.
//
// With -s the client connects to a SOCKS5 entry (RFC 1928, CONNECT, no auth)
// and asks it for -c; otherwise it connects to -c directly. -b binds the
// client's source address (warren-node names the source workload by it).
// -H sets the Host header (default "echo"). Replies must carry Content-Length.
// Output: one line of key=value pairs on stdout.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

static struct sockaddr_in g_target, g_socks, g_bind;
static int g_use_socks = 0, g_use_bind = 0;
static const char* g_host = "echo";
static int g_body = 64;

static void die(const char* m) {
  perror(m);
  exit(2);
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

// Connects (through SOCKS5 when configured), blocking; returns a non-blocking fd or -1.
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
    unsigned char req[3 + 10] = {5, 1, 0, 5, 1, 0, 1};
    memcpy(req + 7, &g_target.sin_addr, 4);
    memcpy(req + 11, &g_target.sin_port, 2);
    if (write_all(fd, req, sizeof req) < 0) goto fail;
    unsigned char rep[4];
    if (read_all(fd, rep, 2) < 0 || rep[0] != 5 || rep[1] != 0) goto fail;
    if (read_all(fd, rep, 4) < 0 || rep[0] != 5 || rep[1] != 0) goto fail;
    int extra = rep[3] == 1 ? 6 : rep[3] == 4 ? 18 : -1;
    if (extra < 0) goto fail;
    unsigned char tail[18];
    if (read_all(fd, tail, (size_t)extra) < 0) goto fail;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
fail:
  close(fd);
  return -1;
}

// ---------------------------------------------------------------- server
struct sconn {
  int fd;
  char in[16384];
  size_t in_len;
  char* out;
  size_t out_off, out_len, out_cap;
  nghttp2_session* h2;  // after the HTTP/2 preface
};
static char* g_resp;
static size_t g_resp_len;
static volatile sig_atomic_t g_report;
static long g_accepted;
static void on_usr1(int sig) {
  (void)sig;
  g_report = 1;
}

static int is_listener(void* p, int* lfds, int nl) {
  for (int i = 0; i < nl; i++)
    if (p == (void*)(intptr_t)(i + 1)) return lfds[i];
  return -1;
}


// ---------------------------------------------------------------- HTTP/2 (both sides)
static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void out_append(char** out, size_t* off, size_t* len, size_t* cap, const uint8_t* d, size_t n) {
  if (*off + *len + n > *cap) {
    if (*off) {
      memmove(*out, *out + *off, *len);
      *off = 0;
    }
    if (*len + n > *cap) {
      *cap = (*len + n) * 2;
      *out = realloc(*out, *cap);
    }
  }
  memcpy(*out + *off + *len, d, n);
  *len += n;
}

static ssize_t body_read(nghttp2_session* s, int32_t sid, uint8_t* buf, size_t len, uint32_t* flags,
                         nghttp2_data_source* src, void* ud) {
  (void)s, (void)sid, (void)src, (void)ud;
  size_t n = (size_t)g_body < len ? (size_t)g_body : len;  // bodies fit one frame (-z <= 16384)
  memset(buf, 'b', n);
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int srv_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* ud) {
  (void)ud;
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    char cl[16];
    snprintf(cl, sizeof cl, "%d", g_body);
    nghttp2_nv hdrs[] = {
        {(uint8_t*)":status", (uint8_t*)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t*)"content-type", (uint8_t*)"text/plain", 12, 10, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t*)"content-length", (uint8_t*)cl, 14, strlen(cl), NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.read_callback = body_read};
    nghttp2_submit_response(s, f->hd.stream_id, hdrs, 3, &prd);
  }
  return 0;
}

static nghttp2_session* h2_server_session(void* ud) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, srv_frame_recv);
  nghttp2_session* s;
  nghttp2_session_server_new(&s, cb, ud);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2);
  return s;
}

// Feeds input to the session and queues everything it wants to send; -1 on a protocol error.
static int h2_pump(nghttp2_session* s, const char* in, size_t n, char** out, size_t* off, size_t* len,
                   size_t* cap) {
  if (n && nghttp2_session_mem_recv(s, (const uint8_t*)in, n) < 0) return -1;
  for (;;) {
    const uint8_t* d;
    ssize_t k = nghttp2_session_mem_send(s, &d);
    if (k < 0) return -1;
    if (k == 0) break;
    out_append(out, off, len, cap, d, (size_t)k);
  }
  return 0;
}

static void server_main(int nl, char** addrs) {
  g_resp = malloc(256 + (size_t)g_body);
  int h = snprintf(g_resp, 256,
                   "HTTP/1.1 200 OK\r\nServer: l7bench\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n",
                   g_body);
  memset(g_resp + h, 'b', (size_t)g_body);
  g_resp_len = (size_t)h + (size_t)g_body;
  int ep = epoll_create1(0);
  int lfds[16];
  if (nl > 16) nl = 16;
  int one = 1;
  for (int i = 0; i < nl; i++) {
    struct sockaddr_in a;
    parse_addr(addrs[i], &a);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr*)&a, sizeof a) < 0) die("server bind");
    if (listen(lfd, 4096) < 0) die("listen");
    lfds[i] = lfd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void*)(intptr_t)(i + 1)};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    fprintf(stderr, "server listening on %s\n", addrs[i]);
  }
  struct epoll_event evs[256];
  struct sigaction sa = {.sa_handler = on_usr1};
  sigaction(SIGUSR1, &sa, NULL);  // SIGUSR1: print the count of accepted connections
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (g_report) {
      g_report = 0;
      fprintf(stderr, "accepted=%ld\n", g_accepted);
      fflush(stderr);
    }
    for (int i = 0; i < n; i++) {
      int lfd = is_listener(evs[i].data.ptr, lfds, nl);
      if (lfd >= 0) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          g_accepted++;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct sconn* c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      struct sconn* c = evs[i].data.ptr;
      int closeit = 0;
      if (evs[i].events & EPOLLIN) {
        for (;;) {
          if (c->in_len == sizeof c->in) {  // head too large
            closeit = 1;
            break;
          }
          ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
          if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) closeit = 1;
            break;
          }
          if (r == 0) {
            closeit = 1;
            break;
          }
          c->in_len += (size_t)r;
          if (!c->h2 && c->in_len >= 4 && memcmp(c->in, kPreface, c->in_len < 24 ? c->in_len : 24) == 0) {
            if (c->in_len < 24) continue;
            c->h2 = h2_server_session(c);
          }
          if (c->h2) {
            if (h2_pump(c->h2, c->in, c->in_len, &c->out, &c->out_off, &c->out_len, &c->out_cap) < 0) closeit = 1;
            c->in_len = 0;
            if (closeit) break;
            continue;
          }
          // One reply per complete request head (pipelining tolerated).
          size_t off = 0;
          for (;;) {
            char* end = memmem(c->in + off, c->in_len - off, "\r\n\r\n", 4);
            if (!end) break;
            off = (size_t)(end - c->in) + 4;
            if (c->out_len + c->out_off + g_resp_len > c->out_cap) {
              c->out_cap = (c->out_len + c->out_off + g_resp_len) * 2;
              c->out = realloc(c->out, c->out_cap);
            }
            memcpy(c->out + c->out_off + c->out_len, g_resp, g_resp_len);
            c->out_len += g_resp_len;
          }
          memmove(c->in, c->in + off, c->in_len - off);
          c->in_len -= off;
        }
      }
      if (!closeit && c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len);
        if (w < 0 && errno != EAGAIN) closeit = 1;
        if (w > 0) {
          c->out_off += (size_t)w;
          c->out_len -= (size_t)w;
        }
        if (c->out_len == 0) c->out_off = 0;
        struct epoll_event e = {.events = EPOLLIN | (c->out_len ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
      }
      if (closeit) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        if (c->h2) nghttp2_session_del(c->h2);
        free(c->out);
        free(c);
      }
    }
  }
}

// ---------------------------------------------------------------- client
struct cconn {
  int fd;
  int busy;          // HTTP/1.1: a request is in flight
  int queued;        // rate mode: requests waiting for this connection
  int64_t qsched[64];  // their scheduled times (ring)
  int qhead;
  int64_t t_sched;   // in-flight request's charge-from time
  char in[16384];
  size_t in_len;
  long need;  // bytes of body still expected after the head, -1 while in the head
  nghttp2_session* h2;  // -2
  int inflight;         // HTTP/2 streams in flight
  char* out;
  size_t out_off, out_len, out_cap;
};
static char g_req[512];
static size_t g_req_len;
static long g_done, g_errors, g_bad_status;
static int64_t* g_lat;
static int32_t* g_lat_win;  // rate mode: the 1-s window (of scheduled time) of each latency
static long g_lat_n, g_lat_cap;
static int64_t g_start;
static int g_h2 = 0, g_streams = 0, g_rate_mode = 0;
static int64_t g_deadline;
static int send_req(struct cconn* c, int64_t from);

// A reply is complete: count it and keep the offered load.
static void complete(struct cconn* c, int64_t t_sched) {
  if (t_sched == 0) {  // a warm-up reply
    g_done++;
    return;
  }
  int64_t done = now_ns();
  if (done <= g_deadline || g_rate_mode) {
    g_done++;
    if (g_lat_n < g_lat_cap) {
      if (g_lat_win) g_lat_win[g_lat_n] = (int32_t)((t_sched - g_start) / 1000000000LL);
      g_lat[g_lat_n++] = done - t_sched;
    }
  }
  if (!g_rate_mode) {
    send_req(c, done);
  } else if (c->queued) {
    int64_t s = c->qsched[c->qhead];
    c->qhead = (c->qhead + 1) % 64;
    c->queued--;
    send_req(c, s);  // late: charged from its scheduled time
  }
}

static int cli_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t flags, void* ud) {
  (void)s, (void)f, (void)flags, (void)ud;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0 && (valuelen != 3 || memcmp(value, "200", 3) != 0))
    g_bad_status++;
  return 0;
}
static int cli_stream_close(nghttp2_session* s, int32_t sid, uint32_t code, void* ud) {
  struct cconn* c = ud;
  int64_t t = (int64_t)(intptr_t)nghttp2_session_get_stream_user_data(s, sid);
  c->inflight--;
  if (code != NGHTTP2_NO_ERROR) {
    g_errors++;
    return 0;
  }
  complete(c, t);
  return 0;
}

static void h2_client_init(struct cconn* c) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, cli_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, cli_stream_close);
  nghttp2_session_client_new(&c->h2, cb, c);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
  c->inflight = 0;
}

static int h2_flush(struct cconn* c) {
  c->out_off = c->out_len = 0;
  if (h2_pump(c->h2, NULL, 0, &c->out, &c->out_off, &c->out_len, &c->out_cap) < 0) return -1;
  return c->out_len ? write_all(c->fd, c->out + c->out_off, c->out_len) : 0;
}

static int send_req(struct cconn* c, int64_t from) {
  if (g_h2) {
    char authority[128];
    snprintf(authority, sizeof authority, "%s", g_host);
    nghttp2_nv hdrs[] = {
        {(uint8_t*)":method", (uint8_t*)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t*)":scheme", (uint8_t*)"http", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t*)":authority", (uint8_t*)authority, 10, strlen(authority), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t*)":path", (uint8_t*)"/bench", 5, 6, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t*)"user-agent", (uint8_t*)"l7bench", 10, 7, NGHTTP2_NV_FLAG_NONE},
    };
    if (nghttp2_submit_request(c->h2, NULL, hdrs, 5, NULL, (void*)(intptr_t)from) < 0) return -1;
    c->inflight++;
    return h2_flush(c);
  }
  c->busy = 1;
  c->t_sched = from;
  c->in_len = 0;
  c->need = -1;
  return write_all(c->fd, g_req, g_req_len);  // small; the socket buffer takes it
}

// Whether the connection can take another request now.
static int can_send(struct cconn* c) { return g_h2 ? c->inflight < g_streams : !c->busy; }

// Consumes input; HTTP/1.1: returns 1 when a reply completed (the caller
// completes it), 0 when more is needed, -1 on error. HTTP/2: replies are
// completed from the stream callbacks; returns 0 or -1.
static int on_read(struct cconn* c) {
  if (g_h2) {
    for (;;) {
      ssize_t r = read(c->fd, c->in, sizeof c->in);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return -1;
      }
      if (r == 0) return -1;
      if (nghttp2_session_mem_recv(c->h2, (const uint8_t*)c->in, (size_t)r) < 0) return -1;
      if ((size_t)r < sizeof c->in) break;
    }
    return h2_flush(c) < 0 ? -1 : 0;
  }
  for (;;) {
    ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      return -1;
    }
    if (r == 0) return -1;
    c->in_len += (size_t)r;
    if (c->in_len == sizeof c->in) break;
  }
  if (c->need < 0) {
    char* end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) return c->in_len == sizeof c->in ? -1 : 0;
    size_t head = (size_t)(end - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in + 9, "200", 3) != 0) g_bad_status++;
    long cl = -1;
    for (char* p = c->in; p < end; p++) {
      if ((p == c->in || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
        cl = strtol(p + 15, NULL, 10);
        break;
      }
    }
    if (cl < 0) return -1;  // replies must carry Content-Length
    c->need = cl - (long)(c->in_len - head);
    c->in_len = 0;
  } else {
    c->need -= (long)c->in_len;
    c->in_len = 0;
  }
  if (c->need > 0) return 0;
  if (c->need < 0) return -1;  // extra bytes: nothing was pipelined
  c->busy = 0;
  return 1;
}

static int cmp_i64(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return x < y ? -1 : x > y;
}

static int connect_one(struct cconn* c) {
  c->fd = open_conn();
  if (c->fd < 0) return -1;
  c->busy = 0;
  c->queued = 0;
  if (g_h2) {
    if (c->h2) nghttp2_session_del(c->h2);
    h2_client_init(c);  // the session sends the connection preface itself
    if (h2_flush(c) < 0) return -1;
  }
  return 0;
}

static void client_main(int rate_mode, int conns, int rate, double secs) {
  g_rate_mode = rate_mode;
  if (g_streams <= 0) g_streams = g_h2 ? (rate_mode ? 100 : 10) : 1;
  g_req_len = (size_t)snprintf(g_req, sizeof g_req,
                               "GET /bench HTTP/1.1\r\nHost: %s\r\nUser-Agent: l7bench\r\nAccept: */*\r\n\r\n", g_host);
  struct cconn* cs = calloc((size_t)conns, sizeof *cs);
  int ep = epoll_create1(0);
  for (int i = 0; i < conns; i++) {
    if (connect_one(&cs[i]) < 0) {
      printf("error=connect conns_ok=%d\n", i);
      exit(1);
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e);
  }
  // Warm-up: one request on every connection (opens the upstream paths), not recorded.
  g_deadline = 0;
  g_lat_cap = 0;
  for (int i = 0; i < conns; i++)
    if (send_req(&cs[i], 0) < 0) die("warmup write");
  struct epoll_event evs[256];
  int64_t wdl = now_ns() + 10000000000LL;
  long want = conns;
  while (g_done < want && now_ns() < wdl) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      int r = on_read(evs[i].data.ptr);
      if (r < 0) {
        printf("error=warmup\n");
        exit(1);
      }
      if (r == 1) g_done++;
    }
  }
  if (g_done < want) {
    printf("error=warmup_timeout pending=%ld\n", want - g_done);
    exit(1);
  }
  g_done = 0;
  g_bad_status = 0;
  g_lat_cap = rate_mode ? (long)(rate * secs) + 16 : 1 << 22;
  g_lat = malloc(sizeof(int64_t) * (size_t)g_lat_cap);
  if (rate_mode) g_lat_win = malloc(sizeof(int32_t) * (size_t)g_lat_cap);
  int64_t start = now_ns() + 1000000, deadline = start + (int64_t)(secs * 1e9);
  g_start = start;
  g_deadline = deadline;
  int tfd = -1;
  int64_t interval = rate_mode ? 1000000000LL / rate : 0;
  long issued = 0, total = rate_mode ? (long)(rate * secs) : 0, dropped = 0;
  if (rate_mode) {
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {{interval / 1000000000LL, interval % 1000000000LL},
                             {start / 1000000000LL, start % 1000000000LL}};
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e);
  } else {
    while (now_ns() < start) {
    }
    for (int i = 0; i < conns; i++)
      for (int k = 0; k < g_streams; k++) send_req(&cs[i], now_ns());
  }
  int64_t end_wait = deadline + 5000000000LL;  // rate: let the last replies arrive
  for (;;) {
    int64_t t = now_ns();
    if (!rate_mode && t >= deadline) break;
    if (rate_mode && issued >= total) {
      int busy = 0;
      for (int i = 0; i < conns; i++) busy += cs[i].busy || cs[i].inflight || cs[i].queued;
      if (!busy || t >= end_wait) break;
    }
    int n = epoll_wait(ep, evs, 256, 50);
    for (int i = 0; i < n; i++) {
      struct cconn* c = evs[i].data.ptr;
      if (!c) {
        uint64_t exp;
        if (read(tfd, &exp, sizeof exp) != sizeof exp) continue;
        int64_t tn = now_ns();
        for (uint64_t k = 0; k < exp && issued < total; k++, issued++) {
          int64_t sched = start + issued * interval;
          struct cconn* d = &cs[issued % conns];
          if (can_send(d)) {
            // Idle connection: charge from the actual send unless we are behind schedule.
            if (send_req(d, tn - sched > interval ? sched : tn) < 0) g_errors++;
          } else if (d->queued < 64) {
            d->qsched[(d->qhead + d->queued++) % 64] = sched;
          } else {
            dropped++;
          }
        }
        continue;
      }
      int r = on_read(c);
      if (r < 0) {
        g_errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        if (connect_one(c) < 0) {  // keep the offered load; reconnect
          printf("error=reconnect\n");
          exit(1);
        }
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
        if (!rate_mode)
          for (int k = 0; k < g_streams; k++) send_req(c, now_ns());
        continue;
      }
      if (r == 1) complete(c, c->t_sched);
    }
  }
  double elapsed = rate_mode ? (now_ns() - start) / 1e9 : (deadline - start) / 1e9;
  long n = g_lat_n;
  // Rate mode: p99 of each whole second of scheduled time, and their median (a
  // stall of the machine spoils one second, not the figure).
  double p99w_med = 0, p99w_max = 0;
  int nwin = 0;
  if (g_lat_win && n) {
    int wmax = 0;
    for (long i = 0; i < n; i++) wmax = g_lat_win[i] > wmax ? g_lat_win[i] : wmax;
    int64_t* tmp = malloc(sizeof(int64_t) * (size_t)n);
    int64_t* wp = malloc(sizeof(int64_t) * (size_t)(wmax + 1));
    for (int w = 0; w <= wmax; w++) {
      long k = 0;
      for (long i = 0; i < n; i++)
        if (g_lat_win[i] == w) tmp[k++] = g_lat[i];
      if (k < rate / 2) continue;  // a partial last second
      qsort(tmp, (size_t)k, sizeof *tmp, cmp_i64);
      wp[nwin++] = tmp[(long)((k - 1) * 0.99)];
    }
    if (nwin) {
      qsort(wp, (size_t)nwin, sizeof *wp, cmp_i64);
      p99w_med = (nwin % 2 ? wp[nwin / 2] : (wp[nwin / 2 - 1] + wp[nwin / 2]) / 2) / 1000.0;
      p99w_max = wp[nwin - 1] / 1000.0;
    }
    free(tmp);
    free(wp);
  }
  qsort(g_lat, (size_t)n, sizeof *g_lat, cmp_i64);
#define PCT(p) (n ? g_lat[(long)((n - 1) * (p))] / 1000.0 : 0.0)
  printf("mode=%s proto=%s conns=%d streams=%d requests=%ld errors=%ld bad_status=%ld dropped=%ld secs=%.3f "
         "rps=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f windows=%d p99w_med_us=%.1f "
         "p99w_max_us=%.1f\n",
         rate_mode ? "rate" : "sat", g_h2 ? "h2" : "http1.1", conns, g_streams, g_done, g_errors, g_bad_status,
         dropped, elapsed, g_done / elapsed, PCT(0.50), PCT(0.90), PCT(0.99), PCT(0.999),
         n ? g_lat[n - 1] / 1000.0 : 0.0, nwin, p99w_med, p99w_max);
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL);
  if (argc < 2) {
    fprintf(stderr, "usage: l7bench server|sat|rate ...\n");
    return 2;
  }
  const char* mode = argv[1];
  int conns = 1, rate = 2000;
  double secs = 5;
  int opt;
  optind = 2;
  while ((opt = getopt(argc, argv, "c:s:b:n:t:r:z:H:2m:")) != -1) {
    switch (opt) {
      case 'c': parse_addr(optarg, &g_target); break;
      case 's': parse_addr(optarg, &g_socks); g_use_socks = 1; break;
      case 'b':
        memset(&g_bind, 0, sizeof g_bind);
        g_bind.sin_family = AF_INET;
        inet_pton(AF_INET, optarg, &g_bind.sin_addr);
        g_use_bind = 1;
        break;
      case 'n': conns = atoi(optarg); break;
      case 't': secs = atof(optarg); break;
      case 'r': rate = atoi(optarg); break;
      case 'z': g_body = atoi(optarg); break;
      case 'H': g_host = optarg; break;
      case '2': g_h2 = 1; break;
      case 'm': g_streams = atoi(optarg); break;
      default: return 2;
    }
  }
  if (!strcmp(mode, "server")) {
    if (optind >= argc) return 2;
    server_main(argc - optind, argv + optind);
  } else if (!strcmp(mode, "sat")) {
    client_main(0, conns, rate, secs);
  } else if (!strcmp(mode, "rate")) {
    client_main(1, conns, rate, secs);
  } else {
    return 2;
  }
  return 0;
}
