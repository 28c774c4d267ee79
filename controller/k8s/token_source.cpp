#include "k8s/token_source.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "k8s/api.h"

namespace warren::controller::k8s {

TokenSource::TokenSource(std::string static_token, std::string file)
    : token_(std::move(static_token)), file_(std::move(file)) {
  if (!file_.empty()) read();
}

bool TokenSource::read() {
  struct stat st {};
  if (::stat(file_.c_str(), &st) != 0) {
    spdlog::warn("kubernetes: token file {}: {}", file_, std::strerror(errno));
    stamp_ = {};
    return false;
  }
  Stamp s{static_cast<unsigned long long>(st.st_ino), static_cast<unsigned long long>(st.st_size),
          static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec};
  auto text = read_text_file(file_);
  if (!text) {
    spdlog::warn("kubernetes: token file: {}", text.error().message);
    return false;
  }
  std::string t = std::move(*text);
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  stamp_ = s;
  bool changed = t != token_;
  token_ = std::move(t);
  return changed;
}

const std::string& TokenSource::token() {
  if (file_.empty()) return token_;
  struct stat st {};
  if (::stat(file_.c_str(), &st) == 0) {
    Stamp s{static_cast<unsigned long long>(st.st_ino),
            static_cast<unsigned long long>(st.st_size),
            static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec};
    if (!(s == stamp_)) {
      if (read()) spdlog::info("kubernetes: token file {} changed, using the new token", file_);
    }
  }
  return token_;
}

bool TokenSource::reload() { return file_.empty() ? false : read(); }

}  // namespace warren::controller::k8s
