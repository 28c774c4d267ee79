#include "warren/cert_manager.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "warren/csr.h"
#include "warren/log.h"

namespace warren::certs {

namespace {

using std::chrono::milliseconds;

double uniform(double hi) {
  if (hi <= 0) return 0;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0, hi)(rng);
}

std::string when(CertManager::Clock::time_point t) {
  return t == CertManager::Clock::time_point{} ? std::string() : log::rfc3339_millis(t);
}

}  // namespace

CertManager::CertManager(uv_loop_t* loop, certs::IdentityStore& store, CsrTransport& transport,
                         CertManagerOptions opts)
    : loop_(loop), store_(store), transport_(transport), opts_(std::move(opts)), timer_(loop) {}

CertManager::~CertManager() = default;

CertManager::Clock::time_point CertManager::now() const {
  return opts_.clock ? opts_.clock() : Clock::now();
}

void CertManager::schedule(milliseconds delay) {
  if (stopped_) return;
  timer_.start(static_cast<uint64_t>(std::max<int64_t>(0, delay.count())), 0,
               [this] { evaluate(); });
}

void CertManager::set_wanted(const std::vector<std::string>& ids) {
  std::set<std::string> want;
  for (const auto& id : ids) {
    if (auto r = certs::parse_spiffe_id(id, nullptr); !r) {
      spdlog::warn("certificates: skipping {}", log::escape(r.error().message));
      continue;
    }
    want.insert(id);
  }
  auto t = now();
  for (auto& [id, e] : entries_) {
    bool w = want.count(id) > 0;
    if (e.wanted && !w) e.unwanted_since = t;
    e.wanted = w;
  }
  for (const auto& id : want) {
    if (entries_.count(id)) continue;
    Entry e;
    e.next_attempt = t;
    entries_.emplace(id, std::move(e));
  }
  schedule(milliseconds(0));
}

Result<void> CertManager::set_trust_bundle(std::string_view pem) {
  auto roots = certs::read_certs_pem(pem);
  if (!roots) return roots.error().wrap("trust bundle");
  for (auto& r : *roots)
    if (X509_check_ca(r.get()) == 0)
      return make_error(Errc::kInvalidArgument,
                        "trust bundle: holds a certificate that is not a CA");
  const auto& cur = store_.roots();
  auto holds = [](const std::vector<certs::X509Ptr>& set, X509* c) {
    return std::any_of(set.begin(), set.end(),
                       [&](const certs::X509Ptr& x) { return X509_cmp(x.get(), c) == 0; });
  };
  bool same = cur.size() == roots->size() &&
              std::all_of(roots->begin(), roots->end(),
                          [&](const certs::X509Ptr& r) { return holds(cur, r.get()); });
  if (same) return {};
  store_.set_roots(std::move(*roots));
  auto t = now();
  for (auto& [id, e] : entries_) {
    if (!e.current || e.in_flight) continue;
    std::vector<X509*> chain;
    for (auto& c : e.current->chain) chain.push_back(c.get());
    if (auto r = certs::verify_chain(e.current->leaf.get(), chain, store_.root_ptrs(), t); !r) {
      spdlog::info(
          "certificate for {} does not verify against the new trust bundle ({}): "
          "renewing now, keeping it until then",
          id, r.error().message);
      e.next_attempt = t;
    }
  }
  spdlog::info("trust bundle replaced: {} root(s)", store_.roots().size());
  certs::IdentityStore::ReloadReport rep;
  rep.roots_changed = true;
  schedule(milliseconds(0));
  fire(rep);
  return {};
}

void CertManager::stop() {
  stopped_ = true;
  timer_.stop();
  alive_ = std::make_shared<bool>(true);  // expires the old one: answers in flight are dropped
}

void CertManager::check_now() {
  evaluate();
}

void CertManager::retry_failed_now() {
  auto t = now();
  for (auto& [id, e] : entries_) {
    if (e.failures == 0 || e.in_flight) continue;
    e.failures = 0;
    e.next_attempt = t;
  }
  schedule(milliseconds(0));
}

void CertManager::evaluate() {
  if (evaluating_) {
    schedule(milliseconds(0));
    return;
  }
  evaluating_ = true;
  auto t = now();
  certs::IdentityStore::ReloadReport rep;
  std::vector<std::string> due;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const std::string& id = it->first;
    Entry& e = it->second;
    if (!e.wanted && t >= e.unwanted_since + opts_.drop_grace) {
      if (e.current && store_.get(id) == e.current) {
        store_.remove(id);
        rep.removed.push_back(id);
        spdlog::info("certificate for {} dropped: no local workload uses it", id);
      }
      it = entries_.erase(it);
      continue;
    }
    if (e.in_flight && t >= e.deadline)
      fail(e, id, make_error(Errc::kTimeout, "the CA did not answer in time"));
    if (!e.in_flight && e.wanted && t >= e.next_attempt && !store_.roots().empty())
      due.push_back(id);
    ++it;
  }
  for (const auto& id : due) start_request(id);
  arm();
  evaluating_ = false;
  fire(rep);
}

void CertManager::arm() {
  auto t = now();
  auto wake = t + opts_.max_sleep;
  bool have_roots = !store_.roots().empty();
  for (const auto& [id, e] : entries_) {
    if (e.in_flight) {
      wake = std::min(wake, e.deadline);
    } else if (e.wanted && have_roots) {
      wake = std::min(wake, e.next_attempt);
    }
    if (!e.wanted) wake = std::min(wake, e.unwanted_since + opts_.drop_grace);
  }
  schedule(std::chrono::ceil<milliseconds>(wake - t));
}

void CertManager::start_request(const std::string& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  if (e.in_flight || !e.wanted) return;
  auto key = certs::generate_p256_key();
  if (!key) return fail(e, id, key.error());
  auto csr = certs::make_csr_pem(key->get(), id);
  if (!csr) return fail(e, id, csr.error());
  e.in_flight = true;
  e.seq = next_seq_++;
  e.deadline = now() + opts_.request_timeout;
  e.pending_key = std::move(*key);
  uint64_t seq = e.seq;
  std::weak_ptr<bool> alive = alive_;
  spdlog::debug("requesting a certificate for {}", id);
  transport_.request(id, *csr, [this, alive, id, seq](Result<std::string> chain) {
    if (alive.expired()) return;
    on_answer(id, seq, std::move(chain));
  });
}

void CertManager::on_answer(const std::string& id, uint64_t seq, Result<std::string> chain) {
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.in_flight || it->second.seq != seq) return;  // late
  Entry& e = it->second;
  e.in_flight = false;
  certs::KeyPtr key = std::move(e.pending_key);
  if (!chain) {
    fail(e, id, chain.error().wrap("certificate request"));
  } else if (auto ident = check_chain(id, *chain, std::move(key)); !ident) {
    fail(e, id, ident.error());
  } else {
    certs::IdentityStore::ReloadReport rep;
    (store_.get(id) ? rep.updated : rep.added).push_back(id);
    ++(e.current ? counters_.renewed : counters_.issued);
    e.current = *ident;
    store_.put(e.current);
    e.failures = 0;
    e.last_error.clear();
    e.next_attempt = renewal_time(*e.current, now());
    spdlog::info("certificate for {} installed: valid until {}, renewal at {}", id,
                 when(e.current->not_after), when(e.next_attempt));
    if (!evaluating_) arm();
    fire(rep);
    return;
  }
  if (!evaluating_) arm();
}

Result<std::shared_ptr<const certs::Identity>> CertManager::check_chain(const std::string& id,
                                                                        const std::string& pem,
                                                                        certs::KeyPtr key) const {
  auto bad = [&](const std::string& why) {
    return make_error(Errc::kTls, "rejected the CA's answer: " + why);
  };
  auto certs = certs::read_certs_pem(pem);
  if (!certs) return bad(certs.error().message);
  auto ident = std::make_shared<certs::Identity>();
  ident->leaf = std::move(certs->front());
  for (size_t i = 1; i < certs->size(); ++i) {
    X509* c = (*certs)[i].get();
    if (X509_self_signed(c, 0) == 1) continue;  // a root: trusted only through the bundle
    ident->chain.push_back(std::move((*certs)[i]));
  }
  auto uri = certs::spiffe_uri_of(ident->leaf.get());
  if (!uri) return bad("the leaf has no single spiffe:// URI SAN");
  if (*uri != id) return bad("the leaf is for " + *uri);
  if (!certs::key_matches(ident->leaf.get(), key.get()))
    return bad("the leaf does not carry the key of the request");
  std::vector<X509*> chain;
  for (auto& c : ident->chain) chain.push_back(c.get());
  if (auto r = certs::verify_chain(ident->leaf.get(), chain, store_.root_ptrs(), now()); !r)
    return bad(r.error().message + " (against the trust bundle)");
  ident->spiffe_id = id;
  ident->key = std::move(key);
  ident->not_before = certs::not_before_of(ident->leaf.get());
  ident->not_after = certs::not_after_of(ident->leaf.get());
  return std::shared_ptr<const certs::Identity>(std::move(ident));
}

void CertManager::fail(Entry& e, const std::string& id, const Error& err) {
  ++counters_.failed;
  ++e.failures;
  e.in_flight = false;
  e.pending_key.reset();
  e.last_error = err.message;
  double ms =
      static_cast<double>(opts_.min_backoff.count()) * std::pow(2.0, std::min(e.failures - 1, 30u));
  ms = std::min(ms, static_cast<double>(opts_.max_backoff.count()));
  ms += uniform(ms / 10);  // spread a fleet's retries
  auto t = now();
  e.next_attempt = t + milliseconds(static_cast<int64_t>(ms));
  if (e.current && e.current->not_after > t) {
    spdlog::warn("certificate for {}: {}; keeping the current one (valid until {}), retry in {} ms",
                 id, err.message, when(e.current->not_after), static_cast<int64_t>(ms));
  } else {
    spdlog::warn("certificate for {}: {}; retry in {} ms", id, err.message,
                 static_cast<int64_t>(ms));
  }
}

CertManager::Clock::time_point CertManager::renewal_time(const certs::Identity& id,
                                                        Clock::time_point received) const {
  double f = std::clamp(opts_.renew_fraction + uniform(opts_.jitter_fraction), 0.0, 1.0);
  auto start = std::max(id.not_before, received);
  auto left = std::chrono::duration<double>(id.not_after - start);
  if (left.count() < 0) left = std::chrono::duration<double>(0);
  auto delay = std::chrono::duration_cast<Clock::duration>(left * f);
  return start + std::max<Clock::duration>(delay, opts_.min_renew_delay);
}

void CertManager::fire(const certs::IdentityStore::ReloadReport& rep) {
  if (on_change_ && rep.changed()) on_change_(rep);
}

std::vector<CertManager::IdStatus> CertManager::status() const {
  std::vector<IdStatus> out;
  for (const auto& [id, e] : entries_) {
    IdStatus s;
    s.spiffe_id = id;
    s.wanted = e.wanted;
    s.installed = e.current && store_.get(id) == e.current;
    s.in_flight = e.in_flight;
    if (e.current) {
      s.not_before = e.current->not_before;
      s.not_after = e.current->not_after;
    }
    if (e.wanted) s.next_renewal = e.next_attempt;
    s.failures = e.failures;
    s.last_error = e.last_error;
    out.push_back(std::move(s));
  }
  return out;
}

nlohmann::json CertManager::status_json() const {
  nlohmann::json ids = nlohmann::json::array();
  for (const auto& s : status()) {
    ids.push_back({{"identity", s.spiffe_id},
                   {"wanted", s.wanted},
                   {"installed", s.installed},
                   {"inFlight", s.in_flight},
                   {"notBefore", when(s.not_before)},
                   {"notAfter", when(s.not_after)},
                   {"nextRenewal", when(s.next_renewal)},
                   {"failures", s.failures},
                   {"lastError", s.last_error}});
  }
  return {{"identities", std::move(ids)},
          {"roots", store_.roots().size()},
          {"issued", counters_.issued},
          {"renewed", counters_.renewed},
          {"failed", counters_.failed}};
}

}  // namespace warren::certs
