#include "resilience.h"

#include <algorithm>

namespace warren::waypoint {

bool Outcome::is_5xx() const {
  return kind != Kind::kResponse || (http_status >= 500 && http_status <= 599);
}

bool Outcome::is_gateway_error() const {
  return kind != Kind::kResponse || http_status == 502 || http_status == 503 || http_status == 504;
}

bool should_retry(const RetryPolicy& p, const Outcome& o) {
  const uint32_t on = p.on;
  switch (o.kind) {
    case Outcome::Kind::kReset:
      if (on & (kRetryOn5xx | kRetryOnGatewayError | kRetryOnReset)) return true;
      return (on & kRetryOnResetBeforeRequest) && o.before_request;
    case Outcome::Kind::kConnectFailure:
      return on & (kRetryOn5xx | kRetryOnGatewayError | kRetryOnReset | kRetryOnConnectFailure |
                   kRetryOnResetBeforeRequest);
    case Outcome::Kind::kRefusedStream:
      return on & (kRetryOn5xx | kRetryOnGatewayError | kRetryOnReset | kRetryOnRefusedStream |
                   kRetryOnResetBeforeRequest);
    case Outcome::Kind::kTimeout:
      return on & (kRetryOn5xx | kRetryOnGatewayError | kRetryOnReset);
    case Outcome::Kind::kResponse:
      break;
  }
  const int s = o.http_status;
  if ((on & kRetryOn5xx) && s >= 500 && s <= 599) return true;
  if ((on & kRetryOnGatewayError) && (s == 502 || s == 503 || s == 504)) return true;
  if ((on & kRetryOnRetriable4xx) && s == 409) return true;
  if ((on & kRetryOnRetriableStatusCodes) &&
      std::find(p.retriable_status_codes.begin(), p.retriable_status_codes.end(), s) !=
          p.retriable_status_codes.end())
    return true;
  if (o.grpc_status) {
    switch (*o.grpc_status) {
      case 1:
        return on & kRetryOnGrpcCancelled;
      case 4:
        return on & kRetryOnGrpcDeadlineExceeded;
      case 8:
        return on & kRetryOnGrpcResourceExhausted;
      case 13:
        return on & kRetryOnGrpcInternal;
      case 14:
        return on & kRetryOnGrpcUnavailable;
      default:
        break;
    }
  }
  return false;
}

bool should_retry(const RetryPolicy& p, const Outcome& o, uint32_t retries_done) {
  return retries_done < p.attempts && should_retry(p, o);
}

std::chrono::milliseconds backoff(uint32_t attempt, uint32_t rnd, std::chrono::milliseconds base,
                                  std::chrono::milliseconds max) {
  uint64_t b = static_cast<uint64_t>(std::max<int64_t>(base.count(), 1));
  uint64_t m = static_cast<uint64_t>(std::max<int64_t>(max.count(), 1));
  uint64_t interval = b;
  for (uint32_t i = 1; i < attempt && interval < m; i++) interval *= 2;
  interval = std::min(interval, m);
  return std::chrono::milliseconds(rnd % interval);
}

// ---------------------------------------------------------------- budget

void WindowCount::set_interval(std::chrono::milliseconds interval) {
  width_ms_ = std::max<int64_t>(interval.count() / kBuckets, 1);
  for (int i = 0; i < kBuckets; i++) slot_[i] = -1, count_[i] = 0;
}

int64_t WindowCount::slot(Clock::time_point now) const {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  return ms / width_ms_;
}

void WindowCount::add(Clock::time_point now) {
  int64_t s = slot(now);
  int i = static_cast<int>(s % kBuckets);
  if (slot_[i] != s) slot_[i] = s, count_[i] = 0;
  count_[i]++;
}

uint64_t WindowCount::sum(Clock::time_point now) {
  int64_t s = slot(now);
  uint64_t n = 0;
  for (int i = 0; i < kBuckets; i++)
    if (slot_[i] >= 0 && slot_[i] > s - kBuckets && slot_[i] <= s) n += count_[i];
  return n;
}

// ---------------------------------------------------------------- breaker

void CircuitBreaker::set_limits(const ConnectionPoolLimits& l) {
  max_requests_ = l.max_requests;
  max_pending_ = l.max_pending_requests;
  max_connections_ = l.max_connections;
  max_retries_ = l.max_retries;
  max_per_connection_ = l.max_requests_per_connection;
}

bool CircuitBreaker::acquire(std::atomic<uint64_t>& n, uint64_t max) {
  uint64_t cur = n.load(std::memory_order_relaxed);
  while (cur < max)
    if (n.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) return true;
  return false;
}

void CircuitBreaker::release(std::atomic<uint64_t>& n) {
  uint64_t cur = n.load(std::memory_order_relaxed);
  while (cur > 0 && !n.compare_exchange_weak(cur, cur - 1, std::memory_order_relaxed)) {
  }
}

bool CircuitBreaker::admit_request() {
  if (windowed_.load(std::memory_order_relaxed)) return admit_request(std::chrono::steady_clock::now());
  return acquire(requests_, max_requests_);
}
bool CircuitBreaker::admit_request(std::chrono::steady_clock::time_point now) {
  if (!acquire(requests_, max_requests_)) return false;
  if (windowed_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lk(window_mu_);
    window_requests_.add(now);
  }
  return true;
}
void CircuitBreaker::release_request() {
  release(requests_);
}
bool CircuitBreaker::admit_pending() {
  return acquire(pending_, max_pending_);
}
void CircuitBreaker::release_pending() {
  release(pending_);
}
bool CircuitBreaker::admit_connection() {
  return acquire(connections_, max_connections_);
}
void CircuitBreaker::release_connection() {
  release(connections_);
}
void CircuitBreaker::set_retry_budget(const std::optional<RetryBudgetPolicy>& b) {
  if (b) {
    budget_percent_ = b->percent;
    budget_min_ = b->min_retry_concurrency;
  }
  auto interval = b ? b->interval : std::chrono::milliseconds(0);
  {
    std::lock_guard<std::mutex> lk(window_mu_);
    if (interval != window_interval_) {  // a changed window starts empty
      window_interval_ = interval;
      window_requests_.set_interval(interval);
      window_retries_.set_interval(interval);
    }
  }
  windowed_ = interval.count() > 0;
  budget_on_ = b.has_value();
}

// Envoy: max(budget_percent% x requests, min_retry_concurrency); the requests
// are the active and pending ones, or those started in the budgetInterval.
uint64_t CircuitBreaker::budget_limit(uint64_t requests) const {
  auto pct = static_cast<uint64_t>(budget_percent_.load(std::memory_order_relaxed) / 100.0 *
                                   static_cast<double>(requests));
  return std::max<uint64_t>(pct, budget_min_.load(std::memory_order_relaxed));
}

uint64_t CircuitBreaker::retry_limit() const {
  if (!budget_on_.load(std::memory_order_relaxed)) return max_retries_.load(std::memory_order_relaxed);
  return budget_limit(requests_.load(std::memory_order_relaxed) + pending_.load(std::memory_order_relaxed));
}

bool CircuitBreaker::admit_retry() {
  if (windowed_.load(std::memory_order_relaxed)) return admit_retry(std::chrono::steady_clock::now());
  return acquire(retries_, retry_limit());
}
bool CircuitBreaker::admit_retry(std::chrono::steady_clock::time_point now) {
  if (!windowed_.load(std::memory_order_relaxed)) return acquire(retries_, retry_limit());
  {
    std::lock_guard<std::mutex> lk(window_mu_);
    if (window_retries_.sum(now) >= budget_limit(window_requests_.sum(now))) return false;
    window_retries_.add(now);
  }
  retries_.fetch_add(1, std::memory_order_relaxed);
  return true;
}
void CircuitBreaker::release_retry() {
  release(retries_);
}

bool CircuitBreaker::connection_reusable(uint64_t served) const {
  uint64_t max = max_per_connection_.load(std::memory_order_relaxed);
  return max == 0 || served < max;
}

std::shared_ptr<CircuitBreaker> CircuitBreakers::get(std::string_view host, std::string_view subset,
                                                     const ConnectionPoolLimits& limits) {
  std::string key(host);
  key += '|';
  key += subset;
  std::lock_guard lock(mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end())
    it = by_key_.emplace(key, std::make_shared<CircuitBreaker>(limits)).first;
  else
    it->second->set_limits(limits);
  return it->second;
}

// ---------------------------------------------------------------- outliers

void OutlierDetector::set_policy(const OutlierPolicy& p) {
  std::lock_guard lock(mu_);
  policy_ = p;
}

void OutlierDetector::set_endpoints(const std::vector<std::string>& keys) {
  std::lock_guard lock(mu_);
  std::map<std::string, State, std::less<>> next;
  for (const auto& k : keys) {
    auto it = endpoints_.find(k);
    next.emplace(k, it == endpoints_.end() ? State{} : it->second);
  }
  endpoints_ = std::move(next);
}

void OutlierDetector::refresh(State& s, Clock::time_point now) {
  if (s.ejected && now >= s.uneject_at) {
    s.ejected = false;
    s.last_uneject = s.uneject_at;
    s.consecutive_5xx = s.consecutive_gateway = 0;
  }
}

size_t OutlierDetector::ejected_locked(Clock::time_point now) {
  size_t n = 0;
  for (auto& [k, s] : endpoints_) {
    refresh(s, now);
    n += s.ejected;
  }
  return n;
}

bool OutlierDetector::record(std::string_view key, const Outcome& o, Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (!policy_.enabled) return false;
  auto it = endpoints_.find(key);
  if (it == endpoints_.end()) it = endpoints_.emplace(std::string(key), State{}).first;
  State& s = it->second;
  refresh(s, now);
  if (s.ejected) return false;  // late results of requests sent before the ejection
  if (!o.is_5xx()) {
    s.consecutive_5xx = s.consecutive_gateway = 0;
    return false;
  }
  s.consecutive_5xx++;
  s.consecutive_gateway = o.is_gateway_error() ? s.consecutive_gateway + 1 : 0;
  bool trip =
      (policy_.consecutive_5xx > 0 && s.consecutive_5xx >= policy_.consecutive_5xx) ||
      (policy_.consecutive_gateway > 0 && s.consecutive_gateway >= policy_.consecutive_gateway);
  if (!trip) return false;
  s.consecutive_5xx = s.consecutive_gateway = 0;
  size_t total = endpoints_.size();
  size_t ejected = ejected_locked(now);
  if (ejected * 100 >= static_cast<uint64_t>(policy_.max_ejection_percent) * total) return false;
  // The multiplier decays by one per full interval spent un-ejected.
  if (s.last_uneject && policy_.interval.count() > 0) {
    auto healthy = std::chrono::duration_cast<std::chrono::milliseconds>(now - *s.last_uneject);
    auto decay = static_cast<uint64_t>(healthy.count() / policy_.interval.count());
    s.multiplier -= static_cast<uint32_t>(std::min<uint64_t>(s.multiplier, decay));
  }
  auto base = std::max<int64_t>(policy_.base_ejection_time.count(), 1);
  auto cap = std::max<int64_t>(base, policy_.max_ejection_time.count());
  if (static_cast<int64_t>(s.multiplier) * base < cap) s.multiplier++;
  auto ms = std::min<int64_t>(base * s.multiplier, cap);
  s.ejected = true;
  s.uneject_at = now + std::chrono::milliseconds(ms);
  return true;
}

bool OutlierDetector::ejected(std::string_view key, Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = endpoints_.find(key);
  if (it == endpoints_.end()) return false;
  refresh(it->second, now);
  return it->second.ejected;
}

size_t OutlierDetector::ejected_count(Clock::time_point now) {
  std::lock_guard lock(mu_);
  return ejected_locked(now);
}

uint32_t OutlierDetector::multiplier(std::string_view key) {
  std::lock_guard lock(mu_);
  auto it = endpoints_.find(key);
  return it == endpoints_.end() ? 0 : it->second.multiplier;
}

}  // namespace warren::waypoint
