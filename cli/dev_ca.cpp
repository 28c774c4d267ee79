#include "dev_ca.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "warren/certs.h"

namespace warren::cli {

namespace {

using Clock = std::chrono::system_clock;
using namespace std::chrono_literals;

constexpr const char* kRootCert = "root-cert.pem";
constexpr const char* kRootKey = "root-key.pem";
constexpr const char* kTrustDomainFile = "trust-domain";
constexpr const char* kDefaultTrustDomain = "cluster.local";

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// mkdir -p
Result<void> make_dirs(const std::string& path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return Error::sys("mkdir " + cur);
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error(Errc::kInvalidArgument, path + ": not a directory");
  return {};
}

std::string read_trust_domain(const std::string& ca_dir) {
  std::ifstream in(ca_dir + "/" + kTrustDomainFile);
  std::string td;
  if (in && std::getline(in, td) && !td.empty()) return td;
  return kDefaultTrustDomain;
}

// Validates td/ns/sa by building the SPIFFE id from them.
Result<std::string> workload_id(const std::string& td, const std::string& ns,
                                const std::string& sa) {
  certs::SpiffeId id{td, ns, sa};
  std::string s = id.to_string();
  if (auto r = certs::parse_spiffe_id(s, nullptr); !r) return r.error();
  return s;
}

struct Window {
  Clock::time_point not_before, not_after;
};

Result<Window> window_of(int hours, const std::string& nb, const std::string& na) {
  auto now = Clock::now();
  Window w{now - 1min, now + std::chrono::hours(hours)};  // a minute of clock skew
  if (hours <= 0) return make_error(Errc::kInvalidArgument, "--hours must be > 0");
  if (!nb.empty()) {
    auto t = parse_time(nb);
    if (!t) return t.error().wrap("--not-before");
    w.not_before = *t;
    if (na.empty()) w.not_after = w.not_before + std::chrono::hours(hours);
  }
  if (!na.empty()) {
    auto t = parse_time(na);
    if (!t) return t.error().wrap("--not-after");
    w.not_after = *t;
  }
  if (w.not_after <= w.not_before)
    return make_error(Errc::kInvalidArgument, "not-after must be later than not-before");
  return w;
}

// Mints and writes <out>/<ns>/<sa>/{cert-chain.pem,key.pem}; returns the directory.
Result<std::string> write_identity(const certs::Ca& ca, const std::string& out,
                                   const std::string& ns, const std::string& sa,
                                   const std::string& spiffe_id, const Window& w) {
  auto key = certs::generate_p256_key();
  if (!key) return key.error();
  auto cert = certs::issue_workload_cert(ca, key->get(), spiffe_id, w.not_before, w.not_after);
  if (!cert) return cert.error();
  std::string dir = out + "/" + ns + "/" + sa;
  if (auto r = make_dirs(dir); !r) return r.error();
  // Key first: a reader that sees the new certificate always finds its key.
  if (auto r = certs::write_file_atomic(dir + "/key.pem", certs::to_pem(key->get()), 0600); !r)
    return r.error();
  if (auto r = certs::write_file_atomic(dir + "/cert-chain.pem", certs::to_pem(cert->get()), 0644);
      !r)
    return r.error();
  return dir;
}

Result<certs::Ca> load_ca(const std::string& ca_dir) {
  auto ca = certs::Ca::load(ca_dir + "/" + kRootCert, ca_dir + "/" + kRootKey);
  if (!ca) return ca.error().wrap("loading CA");
  return ca;
}

int two(std::string_view s, size_t at) {
  if (at + 2 > s.size() || !isdigit(s[at]) || !isdigit(s[at + 1])) return -1;
  return (s[at] - '0') * 10 + (s[at + 1] - '0');
}

}  // namespace

Result<Clock::time_point> parse_time(std::string_view s) {
  auto bad = [&] {
    return make_error(Errc::kInvalidArgument,
                      "\"" + std::string(s) + "\" is neither RFC 3339 nor unix seconds");
  };
  if (s.empty()) return bad();
  bool digits = true;
  for (size_t i = 0; i < s.size(); ++i)
    if (!isdigit(static_cast<unsigned char>(s[i])) && !(i == 0 && s[i] == '-' && s.size() > 1))
      digits = false;
  if (digits) {
    if (s.size() > 15) return bad();
    return Clock::from_time_t(static_cast<time_t>(std::stoll(std::string(s))));
  }
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (toupper(s[10]) != 'T' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':')
    return bad();
  int year = two(s, 0) * 100 + two(s, 2);
  int mon = two(s, 5), day = two(s, 8), hh = two(s, 11), mm = two(s, 14), ss = two(s, 17);
  if (two(s, 0) < 0 || two(s, 2) < 0 || mon < 1 || mon > 12 || day < 1 || day > 31 || hh < 0 ||
      hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60)
    return bad();
  size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    ++i;
    size_t start = i;
    while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == start) return bad();  // fractions are accepted and dropped (whole seconds in X.509)
  }
  long offset = 0;
  if (i < s.size() && toupper(s[i]) == 'Z') {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh = two(s, i + 1), om = two(s, i + 4);
    if (oh < 0 || oh > 23 || om < 0 || om > 59 || i + 3 >= s.size() || s[i + 3] != ':')
      return bad();
    offset = (oh * 3600L + om * 60L) * (s[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return bad();
  }
  if (i != s.size()) return bad();
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss;
  time_t t = timegm(&tm);
  if (tm.tm_mday != day) return bad();  // e.g. Feb 30 normalised away
  return Clock::from_time_t(t - offset);
}

Result<void> dev_ca_init(const DevCaInitOptions& o, std::ostream& out) {
  if (o.out.empty()) return make_error(Errc::kInvalidArgument, "--out is required");
  if (o.days <= 0) return make_error(Errc::kInvalidArgument, "--days must be > 0");
  if (auto r = workload_id(o.trust_domain, "ns", "sa"); !r) return r.error().wrap("--trust-domain");
  std::string cert_file = o.out + "/" + kRootCert, key_file = o.out + "/" + kRootKey;
  for (const std::string& f : {cert_file, key_file}) {
    if (exists(f) && !o.force)
      return make_error(Errc::kInvalidArgument,
                        f + ": a CA already exists here (use --force to replace it)");
  }
  if (auto r = make_dirs(o.out); !r) return r;
  auto key = certs::generate_p256_key();
  if (!key) return key.error();
  auto cert = certs::make_root_ca(key->get(), "Warren dev CA (" + o.trust_domain + ")",
                                  std::chrono::hours(24) * o.days);
  if (!cert) return cert.error();
  certs::Ca ca{std::move(*cert), std::move(*key)};
  if (auto r = ca.save(cert_file, key_file); !r) return r;
  if (auto r =
          certs::write_file_atomic(o.out + "/" + kTrustDomainFile, o.trust_domain + "\n", 0644);
      !r)
    return r;
  out << "wrote " << cert_file << " and " << key_file << " (trust domain " << o.trust_domain << ", "
      << o.days << " days)\n";
  return {};
}

Result<void> dev_ca_issue(const DevCaIssueOptions& o, std::ostream& out) {
  auto ca = load_ca(o.ca_dir);
  if (!ca) return ca.error();
  std::string td = o.trust_domain.empty() ? read_trust_domain(o.ca_dir) : o.trust_domain;
  // ns/sa name the directory; they must be valid even when the id is overridden.
  auto id = workload_id(td, o.ns, o.sa);
  if (!id) return id.error().wrap("bad --namespace, --service-account or --trust-domain");
  std::string spiffe_id = o.spiffe_id.empty() ? *id : o.spiffe_id;
  auto w = window_of(o.hours, o.not_before, o.not_after);
  if (!w) return w.error();
  auto dir = write_identity(*ca, o.out.empty() ? o.ca_dir : o.out, o.ns, o.sa, spiffe_id, *w);
  if (!dir) return dir.error();
  out << spiffe_id << " -> " << *dir << "\n";
  return {};
}

Result<void> dev_ca_issue_config(const DevCaIssueConfigOptions& o, std::ostream& out) {
  using nlohmann::json;
  std::ifstream in(o.config);
  if (!in) return Error::sys(o.config);
  json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return make_error(Errc::kInvalidArgument, o.config + ": not valid JSON");
  auto at = [&](const std::string& ptr, const std::string& why) {
    return make_error(Errc::kInvalidArgument, o.config + ": " + ptr + ": " + why);
  };
  if (!doc.is_object()) return at("", "must be an object");
  std::string td = kDefaultTrustDomain;
  if (doc.contains("trustDomain")) {
    if (!doc["trustDomain"].is_string()) return at("/trustDomain", "must be a string");
    td = doc["trustDomain"].get<std::string>();
  }
  const json empty = json::array();
  const json& workloads = doc.contains("workloads") ? doc["workloads"] : empty;
  if (!workloads.is_array()) return at("/workloads", "must be an array");

  std::vector<std::pair<std::string, std::string>> wanted;  // first-seen order
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < workloads.size(); ++i) {
    const json& w = workloads[i];
    std::string p = "/workloads/" + std::to_string(i);
    if (!w.is_object()) return at(p, "must be an object");
    auto field = [&](const char* name, const char* def) -> Result<std::string> {
      if (!w.contains(name)) {
        if (def) return std::string(def);
        return at(p + "/" + name, "is required");
      }
      if (!w[name].is_string()) return at(p + "/" + name, "must be a string");
      return w[name].get<std::string>();
    };
    auto protocol = field("protocol", "HBONE");
    if (!protocol) return protocol.error();
    if (*protocol == "NONE") continue;
    if (*protocol != "HBONE") return at(p + "/protocol", "must be HBONE or NONE");
    auto ns = field("namespace", nullptr);
    if (!ns) return ns.error();
    auto sa = field("serviceAccount", "default");
    if (!sa) return sa.error();
    if (auto r = workload_id(td, *ns, *sa); !r) return r.error().wrap(o.config + ": " + p);
    if (seen.insert({*ns, *sa}).second) wanted.emplace_back(*ns, *sa);
  }

  auto ca = load_ca(o.ca_dir);
  if (!ca) return ca.error();
  auto w = window_of(o.hours, "", "");
  if (!w) return w.error();
  std::string dest = o.out.empty() ? o.ca_dir : o.out;
  for (const auto& [ns, sa] : wanted) {
    std::string id = certs::SpiffeId{td, ns, sa}.to_string();
    auto dir = write_identity(*ca, dest, ns, sa, id, *w);
    if (!dir) return dir.error();
    out << id << " -> " << *dir << "\n";
  }
  if (wanted.empty()) out << "no HBONE workloads in " << o.config << "\n";
  return {};
}

}  // namespace warren::cli
