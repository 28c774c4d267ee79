// The bearer token the Kubernetes client sends: a static token, or a token
// file (the in-cluster service account token, a kubeconfig tokenFile) that
// is re-read whenever its inode, size or mtime changes, because the kubelet
// rotates bound service-account tokens (they expire after an hour).
//
//   TokenSource t("", "/var/run/secrets/kubernetes.io/serviceaccount/token");
//   t.token();    // before each request: cheap stat(2), re-read on change
//   t.reload();   // after a 401: re-read unconditionally
#pragma once

#include <string>

namespace warren::controller::k8s {

// The bearer token: static, or a file re-read when it changes.
class TokenSource {
 public:
  TokenSource(std::string static_token, std::string file);
  // The current token; re-reads the file first when its stat changed.
  const std::string& token();
  // Re-reads the file unconditionally; true when the token changed.
  bool reload();
  bool from_file() const { return !file_.empty(); }

 private:
  struct Stamp {
    unsigned long long ino = 0, size = 0;
    long long mtime_ns = 0;
    bool operator==(const Stamp&) const = default;
  };
  bool read();
  std::string token_, file_;
  Stamp stamp_;
};

}  // namespace warren::controller::k8s
