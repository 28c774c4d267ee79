// Certificates from the controller's CA (DESIGN.md §6, REFERENCE.md
// "Certificates"), for warren-node's workloads and for warren-waypoint's own
// identity: for every identity wanted, a fresh
// P-256 key and CSR go to the controller's CA; the returned chain is checked
// and installed in the node's IdentityStore (in memory, never on disk).
//
// Renewal starts at half-life (plus a little jitter so a fleet does not renew
// in step). A failed request is retried with capped exponential backoff
// (500 ms .. 150 s) and the current certificate stays installed until a new
// one is in hand: a still-valid certificate is never removed because a
// renewal failed (istio#56452). Identities no longer wanted are dropped after
// a grace period; connections already using them keep their SSL_CTX refs.
//
// A certificate that expires while renewals keep failing stays installed
// until a new one arrives (handshakes fail with or without it); status()
// shows its not_after and the last error.
//
// Requests wait for the first trust bundle (set_trust_bundle): a chain can
// not be checked without one.
//
// Single-threaded: every call and callback on the loop thread. Do not destroy
// the manager from inside on_change.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "warren/certs.h"
#include "warren/defer.h"
#include "warren/result.h"

namespace warren::certs {

class CsrTransport {
 public:
  virtual ~CsrTransport() = default;
  // Sends csr_pem for spiffe_id; calls done exactly once on the loop thread
  // (possibly before request returns) with the chain PEM (leaf first, then
  // intermediates; roots in it are ignored) or an error.
  virtual void request(const std::string& spiffe_id, const std::string& csr_pem,
                       std::function<void(Result<std::string>)> done) = 0;
};

struct CertManagerOptions {
  using Clock = std::chrono::system_clock;
  double renew_fraction = 0.5;    // renew when this much of the lifetime has passed
  double jitter_fraction = 0.05;  // plus a random part of up to this much of the lifetime
  std::chrono::milliseconds min_backoff{500}, max_backoff{150000};
  // Floor on the time between receiving a certificate and renewing it, so a
  // certificate with almost no life left cannot cause a request storm.
  std::chrono::milliseconds min_renew_delay{1000};
  // A request not answered by then counts as failed (a late answer is ignored).
  std::chrono::milliseconds request_timeout{30000};
  // How long an identity that is no longer wanted stays installed.
  std::chrono::milliseconds drop_grace{60000};
  // The timer never sleeps longer than this, so wall-clock jumps are noticed.
  std::chrono::milliseconds max_sleep{60000};
  // Wall clock for validity and renewal times (tests move it forward).
  std::function<Clock::time_point()> clock;
};

class CertManager {
 public:
  using Clock = std::chrono::system_clock;
  // What changed in the store: added/updated/removed ids, roots_changed.
  // The node must drop its cached SSL_CTXs for those ids (all of them when
  // roots_changed); `errors` stays empty.
  using OnChange = std::function<void(const certs::IdentityStore::ReloadReport&)>;

  CertManager(uv_loop_t* loop, certs::IdentityStore& store, CsrTransport& transport,
              CertManagerOptions opts = {});
  ~CertManager();
  CertManager(const CertManager&) = delete;
  CertManager& operator=(const CertManager&) = delete;

  void set_on_change(OnChange fn) { on_change_ = std::move(fn); }

  // The SPIFFE ids of the node's local enrolled workloads; call whenever the
  // config changes. New ids are requested at once; ids that disappear are
  // dropped after drop_grace unless wanted again. Ids that are not valid
  // SPIFFE ids are skipped with a warning.
  void set_wanted(const std::vector<std::string>& ids);

  // Replaces the trusted roots (PEM, one or more certificates; several during
  // a root rotation) and fires on_change with roots_changed. An unchanged
  // bundle is a no-op. Installed certificates that no longer verify against
  // the new roots are renewed at once (and kept until the new ones arrive).
  Result<void> set_trust_bundle(std::string_view pem);

  // Re-evaluates now (after moving a test clock, or on SIGHUP).
  void check_now();
  // Retries failed requests now, resetting their backoff (e.g. the stream to
  // the controller just came back).
  void retry_failed_now();
  // Stops the timer and ignores answers still in flight, so the loop can end.
  // The installed certificates stay in the store.
  void stop();

  struct IdStatus {
    std::string spiffe_id;
    bool wanted = false, installed = false, in_flight = false;
    Clock::time_point not_before{}, not_after{}, next_renewal{};
    unsigned failures = 0;  // consecutive
    std::string last_error;
  };
  std::vector<IdStatus> status() const;  // sorted by id
  struct Counters {
    uint64_t issued = 0;   // first certificate for an id
    uint64_t renewed = 0;  // replacement of an installed one
    uint64_t failed = 0;   // transport errors, timeouts and rejected chains
  };
  const Counters& counters() const { return counters_; }
  // For /config_dump: {"identities": [{identity, wanted, installed, inFlight,
  // notBefore, notAfter, nextRenewal (RFC 3339, "" when none), failures,
  // lastError}], "roots": <count>, "issued", "renewed", "failed"}.
  nlohmann::json status_json() const;

 private:
  struct Entry {
    std::shared_ptr<const certs::Identity> current;  // what this manager installed
    bool wanted = true;
    Clock::time_point unwanted_since{};
    Clock::time_point next_attempt{};  // renewal or retry time (when not in flight)
    bool in_flight = false;
    uint64_t seq = 0;  // of the request in flight; answers to older ones are ignored
    Clock::time_point deadline{};
    certs::KeyPtr pending_key;
    unsigned failures = 0;
    std::string last_error;
  };

  Clock::time_point now() const;
  void schedule(std::chrono::milliseconds delay);
  void evaluate();
  void arm();  // the timer, for the earliest thing to do
  void start_request(const std::string& id);
  void on_answer(const std::string& id, uint64_t seq, Result<std::string> chain);
  Result<std::shared_ptr<const certs::Identity>> check_chain(const std::string& id,
                                                             const std::string& pem,
                                                             certs::KeyPtr key) const;
  void fail(Entry& e, const std::string& id, const Error& err);
  // Renewal at renew_fraction (+ jitter) of the lifetime left at `received`:
  // CAs backdate notBefore for clock skew, so counting from notBefore would put
  // a short-lived certificate's renewal in the past. Never sooner than
  // min_renew_delay after `received`.
  Clock::time_point renewal_time(const certs::Identity& id, Clock::time_point received) const;
  void fire(const certs::IdentityStore::ReloadReport& rep);

  uv_loop_t* loop_;
  certs::IdentityStore& store_;
  CsrTransport& transport_;
  CertManagerOptions opts_;
  OnChange on_change_;
  std::map<std::string, Entry> entries_;
  Counters counters_;
  uint64_t next_seq_ = 1;
  bool evaluating_ = false;
  bool stopped_ = false;
  Timer timer_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace warren::certs
