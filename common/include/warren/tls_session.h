// TLS as a transform on buffers (STYLE.md §2): ciphertext in, plaintext out and
// the reverse; the session never touches a socket. A custom BIO reads straight
// from the caller's input buffer and writes ciphertext straight into an output
// buffer the caller hands to the socket, so no memory-BIO copy is made.
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <string_view>

namespace warren::tls {

enum class Status { kOk, kWantRead, kClosed, kError };

class Session {
 public:
  Session(SSL_CTX* ctx, bool server);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Queue ciphertext received from the peer (copied).
  void feed(const char* data, size_t len) { in_.append(data, len); }
  // Lend ciphertext without copying; call stash_input() before `data` goes
  // away to keep what was not consumed.
  void lend_input(const char* data, size_t len) {
    ext_ = data;
    ext_len_ = len;
  }
  void stash_input();
  // Continue the handshake; kOk once it is complete.
  Status handshake();
  bool handshake_done() const { return handshake_done_; }
  // Decrypt into buf; *n is the number of plaintext bytes. kWantRead when all
  // buffered ciphertext is consumed, kClosed on close_notify.
  Status read(char* buf, size_t cap, size_t* n);
  // Encrypt plaintext; ciphertext accumulates in output().
  bool write(const char* data, size_t len);
  // Sends close_notify into output().
  void shutdown();
  // Ciphertext waiting to go to the socket.
  std::string& output() { return out_; }
  // Hands the ciphertext over; the session holds no buffer until it next
  // writes (then one from the pool), so an idle connection costs none.
  std::string take_output();
  SSL* ssl() { return ssl_; }
  // The last OpenSSL error, formatted (empties the error queue).
  std::string last_error();

 private:
  static int bio_write(BIO* b, const char* data, size_t len, size_t* written);
  static int bio_read(BIO* b, char* data, size_t len, size_t* readbytes);
  static long bio_ctrl(BIO* b, int cmd, long num, void* ptr);

  SSL* ssl_ = nullptr;
  std::string in_;
  size_t in_off_ = 0;
  const char* ext_ = nullptr;
  size_t ext_len_ = 0;
  std::string out_;
  bool handshake_done_ = false;
  std::string err_;
};

// Formats and clears the OpenSSL error queue.
std::string openssl_errors();

}  // namespace warren::tls
