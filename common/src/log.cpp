#include "warren/log.h"

#include <fcntl.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

namespace warren::log {

namespace {

std::optional<spdlog::level::level_enum> parse_level(std::string_view s) {
  using L = spdlog::level::level_enum;
  if (s == "trace") return L::trace;
  if (s == "debug") return L::debug;
  if (s == "info") return L::info;
  if (s == "warn" || s == "warning") return L::warn;
  if (s == "error") return L::err;
  if (s == "off") return L::off;
  return std::nullopt;
}

constexpr char kHex[] = "0123456789abcdef";

}  // namespace

void init(std::string_view lvl) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("warren", std::move(sink));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ\t%l\t%v", spdlog::pattern_time_type::utc);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  auto parsed = parse_level(lvl);
  spdlog::set_level(parsed.value_or(spdlog::level::info));
  if (!parsed) spdlog::warn("unknown log level \"{}\", using info", escape(lvl));
}

bool set_level(std::string_view lvl) {
  auto parsed = parse_level(lvl);
  if (!parsed) return false;
  spdlog::set_level(*parsed);
  return true;
}

std::string level() {
  switch (spdlog::default_logger_raw()->level()) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
    case spdlog::level::critical:
      return "error";
    default:
      return "off";
  }
}

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\x";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

std::string rfc3339_millis(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  int frac = static_cast<int>(ms % 1000);
  if (frac < 0) {  // before 1970: floor, not truncate
    frac += 1000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", frac);
  return buf;
}

// ---------------------------------------------------------------- AccessLog

AccessLog::AccessLog(std::string path, Clock clock)
    : path_(std::move(path)), clock_(std::move(clock)) {
  if (!clock_) clock_ = [] { return std::chrono::system_clock::now(); };
  std::lock_guard lk(mu_);
  (void)open_locked();
}

AccessLog::~AccessLog() {
  if (own_fd_ && fd_ >= 0) ::close(fd_);
}

Result<void> AccessLog::open_locked() {
  if (own_fd_ && fd_ >= 0) ::close(fd_);
  fd_ = -1;
  own_fd_ = false;
  if (path_.empty()) return {};
  if (path_ == "-") {
    fd_ = STDOUT_FILENO;
    return {};
  }
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    last_error_ = Error::sys("opening access log " + path_);
    return *last_error_;
  }
  fd_ = fd;
  own_fd_ = true;
  last_error_.reset();
  return {};
}

Result<void> AccessLog::reopen() {
  std::lock_guard lk(mu_);
  if (path_.empty() || path_ == "-") return {};
  return open_locked();
}

uint64_t AccessLog::dropped() const {
  std::lock_guard lk(mu_);
  return dropped_;
}

std::optional<Error> AccessLog::last_error() const {
  std::lock_guard lk(mu_);
  return last_error_;
}

void AccessLog::write(const nlohmann::json& entry) noexcept {
  if (path_.empty()) return;
  try {
    using nlohmann::json;
    // Compact, ASCII control characters escaped by JSON itself, bad UTF-8 replaced.
    auto dump = [](const json& j) {
      return j.dump(-1, ' ', false, json::error_handler_t::replace);
    };
    std::string line;
    if (!entry.is_object()) {
      line = dump(json{{"time", rfc3339_millis(clock_())}, {"entry", entry}});
    } else if (entry.contains("time")) {
      line = dump(entry);
    } else {
      // Put "time" first without copying the entry: splice it into the dump.
      std::string body = dump(entry);  // "{...}" or "{}"
      line = "{\"time\":\"" + rfc3339_millis(clock_()) + "\"";
      if (body.size() > 2) line += ',';
      line.append(body, 1, std::string::npos);
    }
    line += '\n';

    std::lock_guard lk(mu_);
    if (fd_ < 0) {
      ++dropped_;
      return;
    }
    // One write(2) per line: with O_APPEND, lines from several processes
    // sharing the file do not interleave.
    size_t off = 0;
    while (off < line.size()) {
      ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ++dropped_;
        last_error_ = Error::sys("writing access log " + path_);
        return;
      }
      off += static_cast<size_t>(n);
    }
  } catch (...) {
    std::lock_guard lk(mu_);
    ++dropped_;
  }
}

}  // namespace warren::log
