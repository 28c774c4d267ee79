#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "http1.h"
#include "headers.h"
#include "http1_util.h"

using namespace warren::waypoint;
using namespace warren::waypoint::testing;

TEST_CASE("http1: smuggling CL and TE together", "[http1][smuggling]") {
  refused_as(
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
      Http1Reason::kContentLengthAndTransferEncoding, 400);
  refused_as(
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
      Http1Reason::kContentLengthAndTransferEncoding, 400);
}

TEST_CASE("http1: smuggling duplicate or invalid Content-Length", "[http1][smuggling]") {
  refused_as("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
             Http1Reason::kDuplicateContentLength, 400);
  refused_as("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\n",
             Http1Reason::kDuplicateContentLength, 400);
  for (const char* v : {"4, 4", "+4", "-1", "0x10", "4 4", "", "99999999999999999999"}) {
    INFO(v);
    refused_as(std::string("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ") + v + "\r\n\r\n",
               Http1Reason::kInvalidContentLength, 400);
  }
}

TEST_CASE("http1: smuggling Transfer-Encoding other than a final chunked", "[http1][smuggling]") {
  auto te = [](const std::string& v) {
    return "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + v + "\r\n\r\n";
  };
  refused_as(te("gzip"), Http1Reason::kTransferEncodingNotChunked, 400);
  refused_as(te("chunked, identity"), Http1Reason::kTransferEncodingNotChunked, 400);
  refused_as(te("chunked, chunked"), Http1Reason::kTransferEncodingNotChunked, 400);
  refused_as(te("xchunked"), Http1Reason::kTransferEncodingNotChunked, 400);
  refused_as(te("chunked;q=1"), Http1Reason::kTransferEncodingNotChunked, 400);
  refused_as(te(""), Http1Reason::kTransferEncodingNotChunked, 400);
  refused_as(te("gzip, chunked"), Http1Reason::kUnsupportedTransferCoding, 501);
  refused_as(
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
      Http1Reason::kUnsupportedTransferCoding, 501);
  refused_as("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
             Http1Reason::kTransferEncodingNotChunked, 400);
  // Case-insensitive coding name is fine.
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec);
  REQUIRE(p.feed(te("Chunked") + "0\r\n\r\n").ok());
  CHECK(rec.complete == 1);
}

TEST_CASE("http1: smuggling obs-fold", "[http1][smuggling]") {
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n", Http1Reason::kObsFold,
             400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tcontinued\r\n\r\n", Http1Reason::kObsFold,
             400);
  refused_as("GET / HTTP/1.1\r\n Host: a\r\n\r\n", Http1Reason::kObsFold, 400);
}

TEST_CASE("http1: smuggling bare LF and bare CR", "[http1][smuggling]") {
  refused_as("GET / HTTP/1.1\nHost: a\r\n\r\n", Http1Reason::kBareLf, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\n\n", Http1Reason::kBareLf, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\n\n", Http1Reason::kBareLf, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", Http1Reason::kBareCr, 400);
  refused_as("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Http1Reason::kBareLf, 400);
}

TEST_CASE("http1: smuggling invalid chunk sizes and framing", "[http1][smuggling]") {
  auto chunked = [](const std::string& body) {
    return "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body;
  };
  refused_as(chunked("5 \r\nhello\r\n0\r\n\r\n"), Http1Reason::kInvalidChunkSize, 400);
  refused_as(chunked("0x5\r\nhello\r\n0\r\n\r\n"), Http1Reason::kInvalidChunkSize, 400);
  refused_as(chunked("-5\r\nhello\r\n0\r\n\r\n"), Http1Reason::kInvalidChunkSize, 400);
  refused_as(chunked("g\r\n"), Http1Reason::kInvalidChunkSize, 400);
  refused_as(chunked("ffffffffffffffffff\r\n"), Http1Reason::kInvalidChunkSize, 400);
  refused_as(chunked(";ext\r\n"), Http1Reason::kInvalidChunkSize, 400);
  refused_as(chunked("5\nhello\r\n0\r\n\r\n"), Http1Reason::kInvalidChunkSize, 400);
  refused_as(chunked("5\r\nhelloXX0\r\n\r\n"), Http1Reason::kInvalidChunkFraming, 400);
  refused_as(chunked("5\r\nhello\r\n0\r\n\n"), Http1Reason::kBareLf, 400);
  refused_as(chunked("5\r\nhello\r\n0\r\nx: 1\n\r\n"), Http1Reason::kBareLf, 400);
  refused_as(chunked("5\r\nhello\r\n0\r\nx : 1\r\n\r\n"), Http1Reason::kWhitespaceBeforeColon, 400);
  refused_as(chunked("5\r\nhello\r\n0\r\nx: 1\r\n folded\r\n\r\n"), Http1Reason::kObsFold, 400);
}

TEST_CASE("http1: header syntax", "[http1][smuggling]") {
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
             Http1Reason::kWhitespaceBeforeColon, 400);
  refused_as("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", Http1Reason::kWhitespaceBeforeColon, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n", Http1Reason::kInvalidHeaderName, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", Http1Reason::kInvalidHeaderName, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", Http1Reason::kInvalidHeaderName, 400);
  refused_as(std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a") + '\0' + "b\r\n\r\n",
             Http1Reason::kInvalidHeaderValue, 400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", Http1Reason::kInvalidHeaderValue,
             400);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", Http1Reason::kInvalidHeaderValue,
             400);
}

TEST_CASE("http1: header section limits answer 431", "[http1][limits]") {
  Http1Limits l;
  l.max_head_bytes = 1024;
  l.max_headers = 5;
  std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(2000, 'a') + "\r\n\r\n";
  refused_as(big, Http1Reason::kHeaderTooLarge, 431, l);
  std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 5; i++) many += "X-" + std::to_string(i) + ": v\r\n";
  refused_as(many + "\r\n", Http1Reason::kTooManyHeaders, 431, l);
  // The default allows 100 fields and 60 KiB, and no more.
  std::string hundred = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 99; i++) hundred += "X-" + std::to_string(i) + ": v\r\n";
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec);
  REQUIRE(p.feed(hundred + "\r\n").ok());
  CHECK(rec.complete == 1);
  refused_as(hundred + "X-100: v\r\n\r\n", Http1Reason::kTooManyHeaders, 431);
  refused_as("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(61 * 1024, 'a') + "\r\n\r\n",
             Http1Reason::kHeaderTooLarge, 431);
  // An endless head is refused at the limit, without waiting for its end.
  Recorder slow;
  Http1Parser q(Http1Parser::Kind::kRequest, slow, l);
  REQUIRE(q.feed("GET / HTTP/1.1\r\nX: ").ok());
  CHECK_FALSE(q.feed(std::string(1024, 'a')).ok());
  CHECK(q.failure().status == 431);
  // Trailers have the same limits.
  std::string tr = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
  for (int i = 0; i < 6; i++) tr += "T-" + std::to_string(i) + ": v\r\n";
  refused_as(tr + "\r\n", Http1Reason::kTooManyHeaders, 431, l);
}

TEST_CASE("http1: a head of exactly the limit is taken, one byte more is not, however it arrives",
          "[http1][limits]") {
  const std::string start = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  Http1Limits l;
  l.max_head_bytes = 200;
  // Empty lines before the start line do not count towards the head.
  std::string exact = "\r\n\r\n" + start + std::string(200 - start.size() - 4, 'a') + "\r\n\r\n";
  for (size_t step : {size_t{0}, size_t{1}, size_t{3}, size_t{7}, size_t{64}}) {
    INFO("step " << step);
    Recorder rec;
    Http1Parser p(Http1Parser::Kind::kRequest, rec, l);
    auto r = feed(p, exact + "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", step);
    REQUIRE(r.ok());
    REQUIRE(rec.complete == 2);
    std::string x;
    CHECK(header_value(rec.heads[0].headers, "x", x));
    CHECK(x == std::string(200 - start.size() - 4, 'a'));
    CHECK(rec.heads[1].target == "/2");
  }
  refused_as(start + std::string(200 - start.size() - 3, 'a') + "\r\n\r\n", Http1Reason::kHeaderTooLarge,
             431, l);
  // Over the limit in the final empty line too.
  refused_as(start + std::string(200 - start.size() - 2, 'a') + "\r\n\r\n", Http1Reason::kHeaderTooLarge,
             431, l);
}

TEST_CASE("http1: body limit answers 413", "[http1][limits]") {
  Http1Limits l;
  l.max_body_bytes = 10;
  refused_as("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", Http1Reason::kBodyTooLarge,
             413, l);
  refused_as("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n",
             Http1Reason::kBodyTooLarge, 413, l);
  Recorder rec;
  Http1Parser p(Http1Parser::Kind::kRequest, rec, l);
  REQUIRE(p.feed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n")
              .ok());
  CHECK(rec.bodies[0] == "helloworld");
  Recorder resp;
  Http1Parser q(Http1Parser::Kind::kResponse, resp, l);
  REQUIRE(q.feed("HTTP/1.1 200 OK\r\n\r\n0123456789").ok());
  auto r = q.feed("x");
  REQUIRE_FALSE(r.ok());
  CHECK(q.failure().reason == Http1Reason::kBodyTooLarge);
  CHECK(q.failure().status == 502);  // an upstream's fault
}
