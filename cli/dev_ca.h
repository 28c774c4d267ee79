// `warrenctl dev-ca`: a file-based development CA that mints the workload
// identities warren-node reads (the <dir>/<ns>/<sa>/{cert-chain.pem,key.pem}
// layout of certs::IdentityStore). Not for production: the root key sits in
// a file.
#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <string_view>

#include "warren/result.h"

namespace warren::cli {

struct DevCaInitOptions {
  std::string out;  // DIR: root-cert.pem, root-key.pem, trust-domain
  std::string trust_domain = "cluster.local";
  int days = 3650;
  bool force = false;  // overwrite an existing CA
};

struct DevCaIssueOptions {
  std::string ca_dir;
  std::string ns, sa;
  std::string out;           // defaults to ca_dir
  std::string trust_domain;  // defaults to the CA's (the trust-domain file), else cluster.local
  int hours = 24;
  std::string not_before, not_after;  // RFC 3339 or unix seconds; override the window
  std::string spiffe_id;              // overrides the id (tests: wrong identities)
};

struct DevCaIssueConfigOptions {
  std::string ca_dir;
  std::string config;  // node config JSON
  std::string out;     // defaults to ca_dir
  int hours = 24;
};

// Each prints what it wrote to `out`; errors name the file and the reason.
Result<void> dev_ca_init(const DevCaInitOptions& o, std::ostream& out);
Result<void> dev_ca_issue(const DevCaIssueOptions& o, std::ostream& out);
Result<void> dev_ca_issue_config(const DevCaIssueConfigOptions& o, std::ostream& out);

// "2024-05-01T12:00:00Z", "2024-05-01T14:00:00.5+02:00" or unix seconds "1714564800".
Result<std::chrono::system_clock::time_point> parse_time(std::string_view s);

}  // namespace warren::cli
