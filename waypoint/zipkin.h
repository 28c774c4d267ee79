// Span export in Zipkin v2 JSON over HTTP/1.1 (POST /api/v2/spans), as
// Istio's Zipkin tracer provider does.
//
// ZipkinExporter runs on one libuv loop. enqueue() may be called from any
// thread and never blocks: the queue is bounded and a full queue drops (and
// counts) the span. A timer flushes up to `batch` spans at a time as one POST
// of a JSON array on a fresh plain TCP connection ("Connection: close"); the
// status line decides success. A failed batch is counted and dropped, never
// retried, so a dead collector costs one connection attempt per interval.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "telemetry.h"
#include "trace.h"

namespace warren::waypoint {

struct ZipkinEndpoint {
  std::string service_name;  // lower case in Zipkin; "" -> omitted
  std::string ip;            // IPv4 or IPv6 literal; "" -> omitted
  uint16_t port = 0;         // 0 -> omitted
};

// Splits "1.2.3.4:80" / "[::1]:80" / "1.2.3.4" into an endpoint's ip and port.
ZipkinEndpoint endpoint_from_address(std::string_view ip_port, std::string service_name = {});

struct SpanRecord {
  TraceId trace_id;
  uint64_t id = 0;
  uint64_t parent_id = 0;  // 0: root, no parentId
  bool trace_id_64bit = false;
  std::string name;  // operation, e.g. "reviews.default.svc.cluster.local:9080/*"
  enum class Kind { kServer, kClient } kind = Kind::kServer;
  int64_t timestamp_us = 0;  // epoch microseconds
  int64_t duration_us = 0;   // written as at least 1 (0 means "unfinished" to Zipkin)
  ZipkinEndpoint local, remote;
  std::vector<std::pair<std::string, std::string>> tags;
  bool debug = false;
};

// One Zipkin v2 span object: traceId, id, parentId, name, kind, timestamp,
// duration, localEndpoint, remoteEndpoint, tags, debug.
std::string span_json(const SpanRecord& s);
void append_span_json(std::string& out, const SpanRecord& s);

// The waypoint's span for one request, with Istio's tags: http.method,
// http.url, http.path, http.protocol, http.status_code, error (5xx, no
// response, or a non-zero grpc status), response_flags, upstream_cluster,
// upstream_cluster.name, peer.address, request_size, response_size,
// user_agent, guid:x-request-id, istio.canonical_service,
// istio.canonical_revision, istio.namespace, grpc.status_code, component.
// `local` is the waypoint itself; the remote endpoint is the upstream host.
SpanRecord server_span(const RequestRecord& r, const Span& span, const ZipkinEndpoint& local);

struct ZipkinOptions {
  size_t max_queue = 4096;  // spans waiting; more are dropped
  size_t batch = 256;       // spans per POST
  std::chrono::milliseconds flush_interval{1000};
  std::chrono::milliseconds timeout{2000};  // connect + write + status line
};

class ZipkinExporter {
 public:
  using Options = ZipkinOptions;

  // `host_port`: the collector as "IP:port" or "[IPv6]:port" (no DNS here).
  // An unparsable address makes ok() false; every batch then fails.
  ZipkinExporter(uv_loop_t* loop, std::string host_port, std::string path = "/api/v2/spans",
                 Options opts = {});
  // Calls close(); the loop must still be run afterwards so libuv can finish
  // closing the handles (their memory is freed then, not here).
  ~ZipkinExporter();
  ZipkinExporter(const ZipkinExporter&) = delete;
  ZipkinExporter& operator=(const ZipkinExporter&) = delete;

  // Any thread. Never blocks on I/O; bounded by max_queue.
  void enqueue(SpanRecord span);
  // Loop thread: start a POST now if none is in flight (tests, shutdown).
  void flush();
  // Loop thread: stop the timers, abort a POST in flight (its spans count as
  // failed), drop what is queued (counted as dropped). Idempotent.
  void close();

  bool ok() const;
  uint64_t sent() const;     // spans a collector accepted (2xx)
  uint64_t failed() const;   // spans in batches that failed (connect, timeout, non-2xx)
  uint64_t dropped() const;  // spans refused because the queue was full or closed
  uint64_t batches() const;  // POSTs that got a 2xx
  size_t queued() const;

  struct Shared;  // queue and counters, shared with enqueue() callers
  struct Impl;    // libuv handles; frees itself once they are closed

 private:
  std::shared_ptr<Shared> shared_;
  Impl* impl_ = nullptr;
};

}  // namespace warren::waypoint
