// Helpers shared by the HTTP/1 parser tests: a handler that records events
// and feeders that split the input.
#pragma once

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "http1.h"

namespace warren::waypoint::testing {

struct Recorder : Http1Handler {
  std::vector<MessageHead> heads;
  std::vector<std::string> bodies;  // one per message
  std::vector<Headers> trailers;
  int complete = 0;
  size_t body_calls = 0;
  void on_head(MessageHead h) override {
    heads.push_back(std::move(h));
    bodies.emplace_back();
  }
  void on_body(std::string_view d) override {
    REQUIRE(!bodies.empty());
    bodies.back() += d;
    body_calls++;
  }
  void on_trailers(Headers t) override { trailers.push_back(std::move(t)); }
  void on_complete() override { complete++; }
};

// Feeds `in` in pieces of `step` bytes (0: at once); returns total consumed.
inline warren::Result<size_t> feed(Http1Parser& p, std::string_view in, size_t step = 0) {
  if (step == 0) return p.feed(in);
  size_t total = 0;
  for (size_t i = 0; i < in.size(); i += step) {
    auto r = p.feed(in.substr(i, step));
    if (!r) return r;
    total += *r;
    if (*r < std::min(step, in.size() - i)) break;
  }
  return total;
}

// Parses a request that must be refused; returns the failure.
inline Http1Failure refused(std::string_view in, Http1Limits limits = {}, size_t step = 0) {
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec, limits);
  auto r = feed(p, in, step);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == warren::Errc::kProtocol);
  CHECK(r.error().message.find(http1_reason_name(p.failure().reason)) != std::string::npos);
  CHECK(rec.complete == 0);
  // Once failed, always failed.
  CHECK_FALSE(p.feed("GET / HTTP/1.1\r\nHost: a\r\n\r\n").ok());
  return p.failure();
}

inline void refused_as(std::string_view in, Http1Reason reason, int status,
                       Http1Limits limits = {}) {
  for (size_t step : {size_t{0}, size_t{1}, size_t{7}}) {
    INFO("step " << step << " input " << in);
    auto f = refused(in, limits, step);
    CHECK(http1_reason_name(f.reason) == std::string(http1_reason_name(reason)));
    CHECK(f.status == status);
  }
}

}  // namespace warren::waypoint::testing
