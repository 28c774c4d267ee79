// Process logging (spdlog to stderr) and the structured access log.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "warren/result.h"

namespace warren::log {

// Installs the default spdlog logger: stderr, UTC, one line per record:
//   2024-05-01T12:34:56.789Z  info  message
// `level` as in set_level(); an unknown level falls back to "info" and says so.
// Call once at start-up (not thread-safe against concurrent logging setup).
void init(std::string_view level);

// trace, debug, info, warn (or warning), error, off. Returns false, changing
// nothing, for anything else. Safe to call at run time (admin /logging).
bool set_level(std::string_view level);
// The current level by the names above ("warn", not "warning").
std::string level();

// Makes peer-controlled text (SNI, paths, header values) safe to put in a
// text log line: control bytes, DEL, '\' and '"' become \n, \t, \xNN, \\ and \".
std::string escape(std::string_view s);

// Access log: one compact JSON object per line. Control characters inside
// values are JSON-escaped, so no value can split or forge a line. Adds
// "time" (RFC 3339, UTC, milliseconds) when the entry has none. A non-object
// entry is wrapped as {"entry": ...}. Invalid UTF-8 is replaced by U+FFFD.
class AccessLog {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  // path: a file (opened for append, created 0644), "-" for stdout, "" to
  // disable. Open errors are kept in last_error(); writes are then dropped.
  explicit AccessLog(std::string path, Clock clock = {});
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Never throws; thread-safe. A failed write is counted in dropped().
  void write(const nlohmann::json& entry) noexcept;
  // Closes and reopens the file (after logrotate moved it). No-op for stdout
  // and when disabled.
  Result<void> reopen();

  bool enabled() const { return !path_.empty(); }
  uint64_t dropped() const;
  std::optional<Error> last_error() const;

 private:
  Result<void> open_locked();

  std::string path_;
  Clock clock_;
  mutable std::mutex mu_;
  int fd_ = -1;
  bool own_fd_ = false;
  uint64_t dropped_ = 0;
  std::optional<Error> last_error_;
};

// "2024-05-01T12:34:56.789Z"
std::string rfc3339_millis(std::chrono::system_clock::time_point t);

}  // namespace warren::log
