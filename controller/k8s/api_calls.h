// One-off Kubernetes API calls other parts of the controller need, all
// asynchronous on the loop thread (KubernetesSource has the same calls as
// members, using its client):
//
//   // The push server authenticating warren-node's service account token:
//   token_review(client, token, {}, [](Result<TokenReviewResult> r) {
//     if (!r) ...;                         // the API call failed (network, 403, ...)
//     else if (!r->authenticated) ...;     // r->error says why
//     else use(r->username, r->uid, r->node_name());
//   });
//
//   // The CA loading a user-provided root from a Secret:
//   get_secret(client, "warren-system", "cacerts",
//              [](Result<std::map<std::string, std::string>> data) {
//     // data->at("ca-cert.pem"): base64-decoded bytes; Errc::kNotFound when absent
//   });
//
// TokenReview: POST /apis/authentication.k8s.io/v1/tokenreviews. Needs RBAC
// "create" on tokenreviews (the system:auth-delegator ClusterRole).
// A bound service-account token of a pod carries the pod's node in
// extra["authentication.kubernetes.io/node-name"] (Kubernetes >= 1.30, or
// the ServiceAccountTokenPodNodeInfo feature gate).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "k8s/http_client.h"
#include "warren/result.h"

namespace warren::controller::k8s {

struct TokenReviewResult {
  bool authenticated = false;
  std::string username;  // "system:serviceaccount:warren-system:warren-node"
  std::string uid;
  std::vector<std::string> groups;
  std::map<std::string, std::vector<std::string>> extra;
  std::vector<std::string> audiences;
  std::string error;  // the API server's reason when not authenticated

  // extra["authentication.kubernetes.io/node-name"][0], "" when absent.
  std::string node_name() const;
  // extra["authentication.kubernetes.io/pod-name"][0], "" when absent.
  std::string pod_name() const;
};

using TokenReviewFn = std::function<void(Result<TokenReviewResult>)>;
using SecretFn = std::function<void(Result<std::map<std::string, std::string>>)>;

// `audiences` empty: the API server's own audiences.
Client::CallId token_review(Client& client, std::string token, std::vector<std::string> audiences,
                            TokenReviewFn cb);

// The Secret's data, base64-decoded, plus stringData if present (it never is
// on a stored Secret). 404 -> Errc::kNotFound.
Client::CallId get_secret(Client& client, const std::string& ns, const std::string& name,
                          SecretFn cb);

// Parses a TokenReview response body.
Result<TokenReviewResult> parse_token_review(const std::string& body);
// Parses a Secret object's data.
Result<std::map<std::string, std::string>> parse_secret_data(const std::string& body);

}  // namespace warren::controller::k8s
