#include "warren/tls_session.h"

#include <algorithm>

#include "warren/buffer_pool.h"

#include <openssl/err.h>

#include <cstring>
#include <mutex>

namespace warren::tls {

namespace {
BIO_METHOD* method() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "warren-buf");
    return bm;
  }();
  return m;
}
}  // namespace

std::string openssl_errors() {
  std::string s;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!s.empty()) s += "; ";
    s += buf;
  }
  return s;
}

int Session::bio_write(BIO* b, const char* data, size_t len, size_t* written) {
  auto* self = static_cast<Session*>(BIO_get_data(b));
  // A buffer from the pool on the first record after the last take_output():
  // an idle connection holds none (a controller keeps thousands open).
  if (self->out_.empty() && self->out_.capacity() < std::max<size_t>(len, 32768))
    self->out_ = take_buffer(std::max<size_t>(len, 32768));
  self->out_.append(data, len);
  *written = len;
  return 1;
}

int Session::bio_read(BIO* b, char* data, size_t len, size_t* readbytes) {
  auto* self = static_cast<Session*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  size_t avail = self->in_.size() - self->in_off_;
  if (avail == 0) {
    if (self->ext_len_ == 0) {
      BIO_set_retry_read(b);
      *readbytes = 0;
      return 0;
    }
    size_t n = std::min(self->ext_len_, len);
    std::memcpy(data, self->ext_, n);
    self->ext_ += n;
    self->ext_len_ -= n;
    *readbytes = n;
    return 1;
  }
  size_t n = std::min(avail, len);
  std::memcpy(data, self->in_.data() + self->in_off_, n);
  self->in_off_ += n;
  if (self->in_off_ == self->in_.size()) {
    self->in_.clear();
    self->in_off_ = 0;
    if (self->in_.capacity() > 64 * 1024) std::string().swap(self->in_);
  }
  *readbytes = n;
  return 1;
}

long Session::bio_ctrl(BIO* b, int cmd, long num, void* ptr) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING: {
      auto* self = static_cast<Session*>(BIO_get_data(b));
      return static_cast<long>(self->in_.size() - self->in_off_ + self->ext_len_);
    }
    default:
      return 0;
  }
}

Session::Session(SSL_CTX* ctx, bool server) {
  static std::once_flag once;
  std::call_once(once, [] {
    BIO_METHOD* m = method();
    BIO_meth_set_write_ex(m, &Session::bio_write);
    BIO_meth_set_read_ex(m, &Session::bio_read);
    BIO_meth_set_ctrl(m, &Session::bio_ctrl);
  });
  ssl_ = SSL_new(ctx);
  BIO* bio = BIO_new(method());
  BIO_set_data(bio, this);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // one BIO, both directions; SSL owns it
  if (server)
    SSL_set_accept_state(ssl_);
  else
    SSL_set_connect_state(ssl_);
}

Session::~Session() { SSL_free(ssl_); }

void Session::stash_input() {
  if (ext_len_) in_.append(ext_, ext_len_);
  ext_ = nullptr;
  ext_len_ = 0;
}

std::string Session::take_output() {
  std::string out;
  out.swap(out_);  // out_ is left without a buffer until the next record
  return out;
}

Status Session::handshake() {
  if (handshake_done_) return Status::kOk;
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    handshake_done_ = true;
    return Status::kOk;
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::kWantRead;
  err_ = openssl_errors();
  if (err_.empty()) err_ = "handshake failed (error " + std::to_string(e) + ")";
  return Status::kError;
}

Status Session::read(char* buf, size_t cap, size_t* n) {
  *n = 0;
  int r = SSL_read_ex(ssl_, buf, cap, n);
  if (r == 1) return Status::kOk;
  int e = SSL_get_error(ssl_, 0);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::kWantRead;
  if (e == SSL_ERROR_ZERO_RETURN) return Status::kClosed;
  err_ = openssl_errors();
  if (err_.empty()) err_ = "read failed (error " + std::to_string(e) + ")";
  return Status::kError;
}

bool Session::write(const char* data, size_t len) {
  while (len > 0) {
    size_t w = 0;
    if (SSL_write_ex(ssl_, data, len, &w) != 1) {
      err_ = openssl_errors();
      return false;
    }
    data += w;
    len -= w;
  }
  return true;
}

void Session::shutdown() {
  if (handshake_done_) SSL_shutdown(ssl_);
  ERR_clear_error();
}

std::string Session::last_error() {
  std::string e = err_.empty() ? openssl_errors() : err_;
  err_.clear();
  return e;
}

}  // namespace warren::tls
