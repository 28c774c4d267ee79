// The stream handlers of the push server: the long-lived configuration stream
// of one node, and one certificate signing request. Internal to
// push_server.cpp.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "push_server.h"
#include "warren/push_proto.h"

namespace warren::controller {

// Reads a request's headers and hands the stream to the handler for its path.
class RequestRouter : public h2::StreamHandler {
 public:
  RequestRouter(PushServer* srv, h2::H2Conn* c) : srv_(srv), conn_(c) {}
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t*, size_t len) override {
    c->consume(sid, len);
  }
  void on_end_stream(h2::H2Conn*, int32_t) override {}
  void on_stream_close(h2::H2Conn*, int32_t, uint32_t) override { delete this; }

 private:
  PushServer* srv_;
  h2::H2Conn* conn_;
};

// Common to both: authentication of the caller.
struct Caller {
  std::string token, claimed_node, pod, peer;
  Principal principal;
  // For logs and status: the node name, or "waypoint:<ns>/<gateway>/<pod>".
  std::string node;
  static std::string bearer(const h2::Headers& h);
};

class PushStream : public h2::StreamHandler {
 public:
  PushStream(PushServer* srv, h2::H2Conn* c, int32_t sid) : srv_(srv), conn_(c), sid_(sid) {}
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_end_stream(h2::H2Conn* c, int32_t sid) override;
  void on_stream_close(h2::H2Conn* c, int32_t sid, uint32_t code) override;
  void on_send_drain(h2::H2Conn*, int32_t) override { pump(); }

  // The server has something new (a delta, a bundle): queue what this node
  // lacks unless it still has plenty queued.
  void pump_updates();
  // A bulk slot came free for this stream (PushServer::release_bulk).
  void resume_bulk() { pump(); }
  const std::string& node() const { return who_.node; }
  const std::string& peer() const { return who_.peer; }
  const std::string& resume_epoch() const { return resume_epoch_; }
  uint64_t resume_version() const { return resume_version_; }
  uint64_t sent_version() const { return sent_version_; }

 private:
  void pump();
  void fail(int status, const std::string& why);
  PushServer* srv_;
  h2::H2Conn* conn_;
  int32_t sid_;
  Caller who_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool open_ = false;
  bool in_pump_ = false;
  std::string resume_epoch_, sent_epoch_;
  uint64_t resume_version_ = 0, sent_version_ = 0, bundle_gen_ = 0;
  std::deque<std::pair<std::shared_ptr<const std::string>, size_t>> q_;
  size_t q_bytes_ = 0;  // not yet handed to HTTP/2
  push::FrameReader reader_{1 << 20};
  std::optional<WaypointScope> scope_;  // a waypoint's stream
};

class SignStream : public h2::StreamHandler {
 public:
  SignStream(PushServer* srv, h2::H2Conn* c, int32_t sid) : srv_(srv), conn_(c), sid_(sid) {}
  void on_headers(h2::H2Conn* c, int32_t sid, h2::Headers&& h, bool end_stream) override;
  void on_data(h2::H2Conn* c, int32_t sid, const uint8_t* data, size_t len) override;
  void on_end_stream(h2::H2Conn* c, int32_t sid) override;
  void on_stream_close(h2::H2Conn*, int32_t, uint32_t) override;

 private:
  void maybe_answer();
  void respond(int status, const nlohmann::json& body);
  PushServer* srv_;
  h2::H2Conn* conn_;
  int32_t sid_;
  Caller who_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::string body_;
  bool body_done_ = false, auth_done_ = false, answered_ = false, too_big_ = false;
  std::string auth_error_;
};

}  // namespace warren::controller
