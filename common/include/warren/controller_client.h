// The proxies' side of the push protocol (warren/push_proto.h), used by
// warren-node and warren-waypoint: one HTTP/2
// over TLS connection to the controller that carries the configuration stream
// and certificate signing requests. It reconnects with capped, jittered
// backoff and resumes from the epoch and version it holds; while the
// controller is away the node keeps serving with what it last accepted.
//
// The client keeps the resources it accepted; on every snapshot or delta it
// hands the candidate set to `apply`, which answers with the ids it rejects
// (their previous versions stay in force), and then acks or nacks.
#pragma once

#include <nlohmann/json.hpp>
#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "warren/cert_manager.h"
#include "warren/defer.h"
#include "warren/h2_conn.h"
#include "warren/ip.h"
#include "warren/push_proto.h"
#include "warren/result.h"
#include "warren/tls_context.h"

namespace warren::push {

struct ControllerClientOptions {
  SockAddr address;
  // A DNS name (e.g. warren-controller.warren-system.svc) instead of an IP:
  // resolved before every connection attempt, `port` then applies and
  // `address` is ignored. The controller is still checked by its SPIFFE id.
  std::string host;
  uint16_t port = 15012;
  // Who asks: a node name, or "waypoint:<namespace>/<gateway>" (push_proto.h).
  std::string node;
  // A waypoint's own pod (x-warren-pod): the controller sends it the
  // waypoint block of that pod (its address).
  std::string pod;
  std::string token_file;     // re-read before each connection
  std::string ca_file;        // roots the controller's certificate must chain to
  std::string trust_domain = "cluster.local";
  uint32_t backoff_min_ms = 100;
  uint32_t backoff_max_ms = 5000;
  uint32_t connect_timeout_ms = 5000;

  // "IP:port" (sets address) or "NAME:port" (sets host and port).
  Result<void> set_address(const std::string& spec);
};

// id -> resource body (controller/model.h).
using ResourceMap = std::map<std::string, nlohmann::json>;

class ControllerClient : public h2::H2Conn::Owner, public h2::StreamHandler {
 public:
  // Given the full candidate set, applies it and returns the ids it rejects
  // with reasons. `changed`: the ids this message touched.
  using ApplyFn = std::function<std::map<std::string, std::string>(
      ResourceMap& candidate, const std::vector<std::string>& changed)>;

  // Delta mode (warren-node): the client keeps no copy of the resources; the
  // callback gets each message's changes (a snapshot replaces everything).
  struct Update {
    bool snapshot = false;
    // The upserts went to the StreamFns while the message was parsed; `upserts`
    // is empty and a snapshot's "start over" already happened (begin).
    bool streamed = false;
    std::vector<std::pair<std::string, nlohmann::json>> upserts;
    std::vector<std::string> removes;
  };
  using UpdateFn = std::function<std::map<std::string, std::string>(Update&&)>;

  // `apply` may be null when an UpdateFn is set.
  ControllerClient(uv_loop_t* loop, ControllerClientOptions opts, ApplyFn apply);
  void set_update_fn(UpdateFn fn) { update_ = std::move(fn); }
  // Optional, with an UpdateFn: each upserted resource is handed over as soon
  // as the parser has it and dropped from the message, so a 100,000-workload
  // snapshot never exists twice (as JSON and as the node's config) and the
  // node's heap is not left fragmented by it. `begin(snapshot)` runs once per
  // message before the first resource (and before the UpdateFn when there is
  // none). A message that breaks off after resources went out closes the
  // connection; the next one starts from a snapshot.
  struct StreamFns {
    std::function<void(bool snapshot)> begin;
    std::function<void(const std::string& id, nlohmann::json&& body)> resource;
  };
  void set_stream_fns(StreamFns fns) { stream_ = std::move(fns); }
  ~ControllerClient() override;
  void start();
  void stop();

  // Sends a CSR; `done` runs exactly once, on the loop thread.
  void request_certificate(const std::string& spiffe_id, const std::string& csr_pem,
                           std::function<void(Result<std::string>)> done);

  std::function<void(const std::string& pem)> on_trust_bundle;
  std::function<void(bool connected)> on_connection;

  bool connected() const { return stream_open_; }
  const std::string& epoch() const { return epoch_; }
  uint64_t version() const { return version_; }
  // What was accepted (ApplyFn mode only; empty in delta mode).
  const ResourceMap& resources() const { return accepted_; }
  const std::string& last_error() const { return last_error_; }
  uint64_t messages() const { return messages_; }

  // H2Conn::Owner
  void on_ready(h2::H2Conn* c) override;
  void on_conn_close(h2::H2Conn* c, const std::string& reason) override;
  // StreamHandler: the configuration stream.
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_end_stream(h2::H2Conn* c, int32_t sid) override;
  void on_stream_close(h2::H2Conn* c, int32_t sid, uint32_t code) override;

 private:
  struct Csr;
  struct CsrHandler;
  struct ConnectWatch;
  void connect();
  void connect_to(const SockAddr& addr);
  std::string target() const;  // for logs and :authority
  void schedule_reconnect(const std::string& why);
  void handle(const std::string& msg);
  void send(const nlohmann::json& j);
  void submit_csr(std::shared_ptr<Csr> r);
  h2::Headers base_headers(const char* path);
  Result<void> load_ca();

  uv_loop_t* loop_;
  ControllerClientOptions opts_;
  ApplyFn apply_;
  UpdateFn update_;
  StreamFns stream_;
  void handle_streamed(const std::string& msg);
  // Removes from `msg`, then the UpdateFn, then the ack or nack.
  void deliver(Update&& u, nlohmann::json& msg, const std::string& epoch, uint64_t version);
  void answer(const std::string& epoch, uint64_t version, const std::map<std::string, std::string>& rejected);
  tls::SslCtxPtr ctx_;
  std::unique_ptr<h2::H2Conn> conn_;
  std::string token_;
  int32_t sid_ = -1;
  bool stream_open_ = false;
  bool stopped_ = false;
  int status_ = 0;
  push::FrameReader reader_;
  ResourceMap accepted_;
  std::string epoch_;
  uint64_t version_ = 0;
  uint64_t messages_ = 0;
  uint32_t backoff_ms_ = 0;
  std::string last_error_;
  Timer retry_, connect_timer_;
  std::deque<std::shared_ptr<Csr>> csr_waiting_;
  std::unique_ptr<ConnectWatch> watch_;
  bool connecting_ = false;
  bool resolving_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// A CertManager transport whose CSRs ride the controller connection. Holds
// the owner's pointer, so the client may be created after the transport.
class ControllerCsrTransport : public certs::CsrTransport {
 public:
  explicit ControllerCsrTransport(std::unique_ptr<ControllerClient>* c) : c_(c) {}
  void request(const std::string& id, const std::string& csr,
               std::function<void(Result<std::string>)> done) override {
    if (!*c_) return done(make_error(Errc::kUnavailable, "no controller client"));
    (*c_)->request_certificate(id, csr, std::move(done));
  }

 private:
  std::unique_ptr<ControllerClient>* c_;
};

// Feeds `m` from `c`: each trust bundle the controller sends, and a retry of
// failed certificate requests whenever the stream comes back.
void feed_cert_manager(ControllerClient& c, certs::CertManager& m);

}  // namespace warren::push
