// One error model for the data path and system calls (STYLE.md §3).
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace warren {

enum class Errc {
  kInvalidArgument,  // bad input from a user or a peer
  kNotFound,
  kPermissionDenied,  // policy said no
  kUnavailable,       // a peer or upstream could not be reached
  kTimeout,
  kTls,
  kProtocol,  // a peer broke a wire protocol
  kSystem,    // a system call failed; see sys_errno
  kInternal,
};

const char* errc_name(Errc c);

struct Error {
  Errc code = Errc::kInternal;
  std::string message;
  int sys_errno = 0;

  static Error sys(std::string what, int e = errno) {
    char buf[128];
    // GNU strerror_r (g++ defines _GNU_SOURCE): thread-safe, returns the text.
    return Error{Errc::kSystem, std::move(what) + ": " + ::strerror_r(e, buf, sizeof buf), e};
  }
  // Adds outer context: "loading certs: open /x: No such file".
  Error wrap(const std::string& context) const& {
    return Error{code, context + ": " + message, sys_errno};
  }
  std::string to_string() const { return std::string(errc_name(code)) + ": " + message; }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Error err) : v_(std::move(err)) {}          // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error err) : err_(std::move(err)), ok_(false) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

inline Error make_error(Errc c, std::string msg) { return Error{c, std::move(msg), 0}; }

}  // namespace warren
