#include "k8s/status_writer.h"

#include <spdlog/spdlog.h>
#include <uv.h>

#include <vector>

#include "k8s/api.h"

namespace warren::controller::k8s {

namespace {

bool writable(const std::string& kind) {
  const KindInfo* k = find_kind(kind);
  return k && k->status_writable;
}

// The model's messages start with the origin ("kubernetes: "); the object's
// own status does not need it.
std::string clean_message(const std::string& origin, const std::string& m) {
  std::string prefix = origin + ": ";
  return m.rfind(prefix, 0) == 0 ? m.substr(prefix.size()) : m;
}

const nlohmann::json* find_cond(const nlohmann::json& conds, const std::string& type) {
  if (!conds.is_array()) return nullptr;
  for (const auto& c : conds) {
    if (c.is_object() && c.value("type", "") == type) return &c;
  }
  return nullptr;
}

}  // namespace

StatusWriter::StatusWriter(Client* client, StatusOptions opts)
    : client_(client), opts_(std::move(opts)) {
  timer_ = new uv_timer_t;
  uv_timer_init(client_->loop(), timer_);
  timer_->data = this;
}

StatusWriter::~StatusWriter() {
  for (auto& [k, id] : calls_) client_->cancel(id);
  timer_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

bool StatusWriter::dirty(const Entry& e) {
  if (e.want_ok) return e.have == Cond::kFalse;
  return e.have != Cond::kFalse || e.have_msg != e.want_msg;
}

size_t StatusWriter::pending() const {
  size_t n = 0;
  for (const auto& [k, e] : entries_) n += dirty(e) ? 1 : 0;
  return n;
}

void StatusWriter::rejected(const ObjectKey& key, const std::string& origin,
                            const std::string& message) {
  if (origin != "kubernetes" || !writable(key.kind)) return;
  Entry& e = entries_[key];
  e.want_ok = false;
  e.want_msg = clean_message(origin, message);
  kick(key);
}

void StatusWriter::accepted(const ObjectKey& key, const std::string& origin) {
  if (origin != "kubernetes") return;
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  it->second.want_ok = true;
  it->second.want_msg.clear();
  if (!dirty(it->second) && !it->second.in_flight) {
    entries_.erase(it);
    return;
  }
  kick(key);
}

void StatusWriter::observe(const nlohmann::json& obj) {
  ObjectKey key = key_of(obj);
  if (!writable(key.kind)) return;
  const nlohmann::json* cond = nullptr;
  if (auto st = obj.find("status"); st != obj.end() && st->is_object()) {
    if (key.kind == "HTTPRoute") {
      if (auto ps = st->find("parents"); ps != st->end() && ps->is_array()) {
        for (const auto& p : *ps) {
          if (p.is_object() && p.value("controllerName", "") == opts_.controller_name &&
              p.contains("conditions")) {
            cond = find_cond(p["conditions"], opts_.condition_type);
            break;
          }
        }
      }
    } else if (auto cs = st->find("conditions"); cs != st->end()) {
      cond = find_cond(*cs, opts_.condition_type);
    }
  }
  Cond have = Cond::kNone;
  std::string msg;
  if (cond) {
    std::string s = cond->value("status", "");
    have = s == "False" ? Cond::kFalse : s == "True" ? Cond::kTrue : Cond::kNone;
    msg = cond->value("message", "");
  }
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (have != Cond::kFalse) return;
    // Rejected earlier (by a previous leader): remember, so an acceptance
    // flips it back and the same rejection is not written again.
    Entry e;
    e.want_ok = false;
    e.want_msg = msg;
    it = entries_.emplace(key, std::move(e)).first;
  }
  it->second.have = have;
  it->second.have_msg = std::move(msg);
}

void StatusWriter::forget(const ObjectKey& key) {
  entries_.erase(key);
  if (auto it = calls_.find(key); it != calls_.end()) {
    client_->cancel(it->second);
    calls_.erase(it);
  }
}

void StatusWriter::set_leader(bool leader) {
  leader_ = leader;
  if (!leader_) return;
  std::vector<ObjectKey> keys;
  for (const auto& [k, e] : entries_) keys.push_back(k);
  for (const auto& k : keys) kick(k);
}

void StatusWriter::kick(const ObjectKey& key) {
  auto it = entries_.find(key);
  if (!leader_ || it == entries_.end() || it->second.in_flight || !dirty(it->second)) return;
  const KindInfo* k = find_kind(key.kind);
  it->second.in_flight = true;
  HttpRequest req;
  req.path = object_path(*k, key.ns, key.name);
  calls_[key] = client_->start(std::move(req), [this, key](Result<HttpResponse> r) {
    calls_.erase(key);
    on_get(key, std::move(r));
  });
}

nlohmann::json StatusWriter::condition(const nlohmann::json& obj, bool ok,
                                       const std::string& msg) const {
  nlohmann::json c = {{"type", opts_.condition_type},
                      {"status", ok ? "True" : "False"},
                      {"reason", ok ? "Accepted" : "Invalid"},
                      {"message", msg},
                      {"lastTransitionTime", rfc3339(std::chrono::system_clock::now())}};
  if (auto md = obj.find("metadata"); md != obj.end() && md->is_object()) {
    if (auto g = md->find("generation"); g != md->end() && g->is_number_integer())
      c["observedGeneration"] = *g;
  }
  return c;
}

nlohmann::json StatusWriter::status_patch(const ObjectKey& key, const nlohmann::json& obj,
                                          bool ok, const std::string& msg) const {
  nlohmann::json cond = condition(obj, ok, msg);
  nlohmann::json status = obj.contains("status") && obj["status"].is_object()
                              ? obj["status"]
                              : nlohmann::json::object();
  auto merge = [&](const nlohmann::json& existing) {
    nlohmann::json out = nlohmann::json::array();
    if (existing.is_array()) {
      for (const auto& c : existing) {
        if (!c.is_object() || c.value("type", "") != opts_.condition_type) {
          out.push_back(c);
        } else if (c.value("status", "") == cond["status"]) {
          cond["lastTransitionTime"] = c.value("lastTransitionTime", cond["lastTransitionTime"]);
        }
      }
    }
    out.push_back(cond);
    return out;
  };
  nlohmann::json patch_status;
  if (key.kind == "HTTPRoute") {
    nlohmann::json parents = nlohmann::json::array();
    nlohmann::json ours_before;
    if (status.contains("parents") && status["parents"].is_array()) {
      for (const auto& p : status["parents"]) {
        if (p.is_object() && p.value("controllerName", "") == opts_.controller_name) {
          if (ours_before.is_null()) ours_before = p.value("conditions", nlohmann::json::array());
        } else {
          parents.push_back(p);
        }
      }
    }
    const nlohmann::json* refs = nullptr;
    if (obj.contains("spec") && obj["spec"].is_object() && obj["spec"].contains("parentRefs"))
      refs = &obj["spec"]["parentRefs"];
    if (refs && refs->is_array()) {
      for (const auto& ref : *refs) {
        parents.push_back({{"parentRef", ref},
                           {"controllerName", opts_.controller_name},
                           {"conditions", merge(ours_before)}});
      }
    }
    patch_status["parents"] = std::move(parents);
  } else {
    patch_status["conditions"] = merge(status.value("conditions", nlohmann::json::array()));
  }
  return {{"metadata", {{"resourceVersion", meta_string(obj, "resourceVersion")}}},
          {"status", std::move(patch_status)}};
}

void StatusWriter::on_get(const ObjectKey& key, Result<HttpResponse> r) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  if (r && r->status == 404) {
    entries_.erase(it);
    return;
  }
  auto obj = r && r->status == 200 ? nlohmann::json::parse(r->body, nullptr, false)
                                   : nlohmann::json();
  if (!obj.is_object() || !leader_) {
    e.in_flight = false;
    if (!r) {
      spdlog::warn("kubernetes: status of {}: {}", key.to_string(), r.error().message);
    } else if (r->status != 200) {
      spdlog::warn("kubernetes: {}", http_error("status of " + key.to_string(), r->status,
                                                r->body).message);
    }
    if (leader_) retry_later();
    return;
  }
  bool ok = e.want_ok;
  std::string msg = e.want_msg;
  const KindInfo* k = find_kind(key.kind);
  HttpRequest req;
  req.method = "PATCH";
  req.path = object_path(*k, key.ns, key.name) + "/status";
  req.content_type = "application/merge-patch+json";
  req.body = status_patch(key, obj, ok, msg).dump();
  calls_[key] = client_->start(std::move(req), [this, key, ok, msg](Result<HttpResponse> r2) {
    calls_.erase(key);
    on_patch(key, ok, msg, std::move(r2));
  });
}

void StatusWriter::on_patch(const ObjectKey& key, bool sent_ok, const std::string& sent_msg,
                            Result<HttpResponse> r) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  e.in_flight = false;
  if (r && r->status == 200) {
    ++writes_;
    e.conflicts = 0;
    e.have = sent_ok ? Cond::kTrue : Cond::kFalse;
    e.have_msg = sent_msg;
    spdlog::info("kubernetes: status of {}: Accepted={}{}{}", key.to_string(),
                 sent_ok ? "True" : "False", sent_ok ? "" : ": ", sent_msg);
    if (e.want_ok && !dirty(e)) {
      entries_.erase(it);
      return;
    }
    kick(key);
    return;
  }
  if (r && r->status == 404) {
    entries_.erase(it);
    return;
  }
  if (r && r->status == 409 && ++e.conflicts <= opts_.max_conflict_retries) {
    kick(key);
    return;
  }
  e.conflicts = 0;
  if (!r) {
    spdlog::warn("kubernetes: status of {}: {}", key.to_string(), r.error().message);
  } else {
    spdlog::warn("kubernetes: {}",
                 http_error("status of " + key.to_string(), r->status, r->body).message);
  }
  retry_later();
}

void StatusWriter::retry_later() {
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(timer_))) return;
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<StatusWriter*>(t->data);
        if (!self) return;
        std::vector<ObjectKey> keys;
        for (const auto& [k, e] : self->entries_) keys.push_back(k);
        for (const auto& k : keys) self->kick(k);
      },
      static_cast<uint64_t>(opts_.retry_delay.count()), 0);
}

}  // namespace warren::controller::k8s
