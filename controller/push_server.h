// The push server on 15012 (DESIGN.md §6, wire format in warren/push_proto.h):
// every warren-node holds one configuration stream; it gets a full snapshot,
// then the model's deltas in order, each versioned, and answers each with an
// ack or a nack naming the resources it rejected. A node that reconnects with
// the epoch and version it holds gets only what changed since, when the
// server still has those deltas; otherwise a snapshot. The same connection
// carries certificate signing requests.
//
// Waypoints subscribe the same way as "waypoint:<ns>/<gateway>" naming their
// pod; each gets its own view (WaypointScope: node kinds, the routing
// objects of its namespace and of the root namespace, its pod's waypoint
// block), built per stream from the shared resource text. Nodes' messages
// carry only the node kinds and are shared by every node.
//
// Sending is paced by HTTP/2 flow control: a large snapshot goes out in slices
// as the node reads it, and a node that falls behind is not buffered for
// without bound: it is caught up with one merged delta (or a snapshot) once
// it has drained what it was sent.
#pragma once

#include <uv.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "model.h"
#include "warren/h2_conn.h"
#include "warren/ip.h"
#include "warren/metrics.h"
#include "warren/result.h"
#include "warren/tcp.h"
#include "warren/tls_context.h"

namespace warren::controller {

// Who is on the other end of a stream or a CSR: a warren-node, or a
// waypoint of one Gateway (x-warren-node "waypoint:<ns>/<gateway>").
struct Principal {
  std::string node;                   // a node: its name; empty for a waypoint
  std::string waypoint_ns, waypoint;  // a waypoint: its Gateway
  // Kubernetes mode: the service account the waypoint's token belongs to, the
  // only identity it may obtain. Empty (local tokens): any its Gateway's pods
  // run as.
  std::string service_account;
  bool is_waypoint() const { return !waypoint.empty(); }
  // The node name, or "waypoint:<ns>/<gateway>".
  std::string name() const;
};

// Who a caller is: `done` gets the principal the token may act as, given
// what it claims (x-warren-node).
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  virtual void authenticate(const std::string& token, const std::string& claimed,
                            std::function<void(Result<Principal>)> done) = 0;
};

// Signs a CSR for an identity the caller has already checked; returns the
// chain PEM (leaf first).
using SignFn = std::function<Result<std::string>(const std::string& csr_pem,
                                                 const std::string& spiffe_id)>;

struct PushOptions {
  SockAddr listen{*IpAddr::parse("0.0.0.0"), 15012};
  size_t history = 1024;              // deltas kept for resuming nodes
  size_t lag_bytes = 64u << 20;       // a node this far behind is caught up later
  // Streams sending a big message (a snapshot) at the same time; the others
  // wait their turn. Each one holds a few MB of HTTP/2 and TLS buffers, so a
  // controller restarted under 1,000 nodes would otherwise hold GBs at once.
  size_t max_bulk_streams = 16;
  std::string epoch;                  // default: random per start
};

class PushServer : public h2::H2Conn::Owner {
 public:
  PushServer(uv_loop_t* loop, Model& model, Authenticator& auth, SignFn sign,
             tls::SslCtxPtr ctx, metrics::Registry& registry, PushOptions opts = {});
  ~PushServer() override;
  Result<void> start();
  SockAddr local() const;
  void stop();

  // After Model::flush(): remembers the delta and streams it to every node.
  // Until the model is synced nothing is sent.
  void publish(const Delta& d);
  // The roots every node must trust; sent with the next message (at once).
  void set_trust_bundle(std::string pem);
  // A renewed serving certificate: new connections use it.
  void set_tls_ctx(tls::SslCtxPtr ctx) { ctx_ = std::move(ctx); }
  const std::string& epoch() const { return opts_.epoch; }

  struct NodeStatus {
    std::string node, peer;
    uint64_t sent = 0, acked = 0;
    std::map<std::string, std::string> rejected;  // id -> reason, from the last nack
    bool connected = false;
  };
  std::vector<NodeStatus> status() const;
  size_t connected() const;
  // Called on every ack or nack (tests and the scale benchmark).
  std::function<void(const std::string& node, uint64_t version)> on_ack;

  // H2Conn::Owner
  h2::StreamHandler* on_new_stream(h2::H2Conn* c, int32_t sid) override;
  void on_conn_close(h2::H2Conn* c, const std::string& reason) override;

 private:
  friend class PushStream;
  friend class SignStream;
  struct Logged {
    uint64_t version;
    std::shared_ptr<const std::string> frame;  // the framed delta message
    Delta delta;
    std::chrono::steady_clock::time_point at;
  };
  static void on_accept(void* ctx, uv_stream_t* server);
  void accept(uv_stream_t* server);
  // The message that brings a node from (epoch, version) to now.
  // `scope`: a waypoint stream's (nullptr: a node's, whose messages are
  // shared between nodes).
  std::shared_ptr<const std::string> catch_up(const std::string& epoch, uint64_t version,
                                              bool with_bundle, const struct WaypointScope* scope);
  std::shared_ptr<const std::string> snapshot_frame(const struct WaypointScope* scope);
  std::string delta_json(uint64_t since, uint64_t version, const Delta& d, bool with_bundle,
                         const struct WaypointScope* scope);
  void text_apply(const Delta& d);
  void stream_opened(class PushStream* s);
  void stream_closed(class PushStream* s);
  void acked(class PushStream* s, uint64_t version, std::map<std::string, std::string> rejected);

  uv_loop_t* loop_;
  Model& model_;
  Authenticator& auth_;
  SignFn sign_;
  tls::SslCtxPtr ctx_;
  PushOptions opts_;
  net::TcpListener* listener_ = nullptr;
  std::map<h2::H2Conn*, std::unique_ptr<h2::H2Conn>> conns_;
  std::set<class PushStream*> streams_;
  // Bulk sending slots (max_bulk_streams): holders, and streams waiting in
  // arrival order.
  std::set<class PushStream*> bulk_;
  std::deque<class PushStream*> bulk_waiting_;
  bool take_bulk(class PushStream* s);  // true: s may send its big message now
  void release_bulk(class PushStream* s);
  std::map<std::string, NodeStatus> nodes_;
  // Serialised body of every current resource, kept in step with the model.
  std::map<std::string, std::shared_ptr<const std::string>> text_;
  bool text_built_ = false;
  std::deque<Logged> log_;
  uint64_t version_ = 0;
  std::shared_ptr<const std::string> snapshot_;
  uint64_t snapshot_version_ = UINT64_MAX;
  std::string bundle_;
  uint64_t bundle_gen_ = 0;
  // Metrics.
  metrics::Gauge* m_connected_;
  metrics::CounterFamily* m_msgs_;
  metrics::CounterFamily* m_acks_;
  metrics::CounterFamily* m_csr_;
  metrics::Histogram* m_ack_latency_;
};

// What a waypoint stream receives (warren/push_proto.h): the node kinds,
// the routing objects of its namespace and of the root namespace, and its
// own pod's waypoint block.
struct WaypointScope {
  std::string ns, gateway, pod, root_ns;
  bool wants(const std::string& id) const;
};

// Local mode: a file of "<token> [<principal>]" lines ('#' comments), where
// the principal is a node name or "waypoint:<namespace>/<gateway>"; a token
// without one may act as any node (not as a waypoint). Re-read when it
// changes.
class TokenFileAuthenticator : public Authenticator {
 public:
  explicit TokenFileAuthenticator(std::string path) : path_(std::move(path)) {}
  Result<void> load();
  void authenticate(const std::string& token, const std::string& claimed,
                    std::function<void(Result<Principal>)> done) override;

 private:
  std::string path_;
  long long mtime_ns_ = -1;
  std::map<std::string, std::string> tokens_;  // token -> principal ("" = any node)
};

}  // namespace warren::controller
