#include "waypoint_deployer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "k8s/api.h"
#include "local_manifest.h"

namespace warren::controller {

using nlohmann::json;

namespace {

// ${VAR} -> vars[VAR]; an unknown variable is an error.
Result<std::string> substitute(const std::string& text, const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (true) {
    size_t d = text.find("${", pos);
    if (d == std::string::npos) break;
    size_t e = text.find('}', d);
    if (e == std::string::npos) return make_error(Errc::kInvalidArgument, "unterminated ${ at offset " + std::to_string(d));
    std::string name = text.substr(d + 2, e - d - 2);
    auto v = vars.find(name);
    if (v == vars.end()) return make_error(Errc::kInvalidArgument, "unknown variable ${" + name + "}");
    out.append(text, pos, d - pos).append(v->second);
    pos = e + 1;
  }
  out.append(text, pos, std::string::npos);
  return out;
}

std::string name_of(const json& obj) {
  return obj.contains("metadata") ? obj["metadata"].value("name", "") : "";
}

}  // namespace

Result<std::unique_ptr<WaypointDeployer>> WaypointDeployer::create(uv_loop_t* loop, k8s::Client& client,
                                                                   WaypointDeployerOptions opts) {
  std::ifstream f(opts.template_file);
  if (!f) return make_error(Errc::kNotFound, opts.template_file + ": cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string file = opts.template_file;
  std::unique_ptr<WaypointDeployer> d(new WaypointDeployer(loop, client, std::move(opts), ss.str()));
  WaypointGateway sample{"check", "waypoint", "waypoint", "", "00000000-0000-0000-0000-000000000000"};
  auto objs = d->render(sample);
  if (!objs) return make_error(objs.error().code, file + ": " + objs.error().message);
  if (objs->empty()) return make_error(Errc::kInvalidArgument, file + ": no objects");
  return d;
}

WaypointDeployer::WaypointDeployer(uv_loop_t* loop, k8s::Client& client, WaypointDeployerOptions opts,
                                   std::string text)
    : loop_(loop), client_(client), opts_(std::move(opts)), text_(std::move(text)), timer_(loop), resync_(loop) {}

WaypointDeployer::~WaypointDeployer() { stop(); }

void WaypointDeployer::stop() {
  stopped_ = true;
  timer_.stop();
  resync_.stop();
  if (call_) client_.cancel(call_);
  call_ = 0;
}

Result<std::vector<json>> WaypointDeployer::render(const WaypointGateway& g) const {
  std::map<std::string, std::string> vars = {{"NAME", g.name},
                                             {"NAMESPACE", g.ns},
                                             {"UID", g.uid},
                                             {"SERVICE_ACCOUNT", g.service_account},
                                             {"IMAGE", opts_.image},
                                             {"CONTROLLER", opts_.controller},
                                             {"TRUST_DOMAIN", opts_.trust_domain},
                                             {"ROOT_NAMESPACE", opts_.root_namespace},
                                             {"TRUST_BUNDLE", json(bundle_).dump()}};
  auto text = substitute(text_, vars);
  if (!text) return text.error();
  auto docs = parse_manifest(*text, false);
  if (!docs) return docs.error();
  std::vector<json> out;
  for (auto& d : *docs) {
    std::string kind = d.obj.value("kind", "");
    const k8s::KindInfo* k = k8s::find_kind(kind);
    if (!k || !k->namespaced)
      return make_error(Errc::kInvalidArgument, "document at line " + std::to_string(d.line) + ": kind \"" + kind +
                                                    "\" is not a namespaced kind the controller can write");
    if (d.obj.value("apiVersion", "") != k->api_version())
      return make_error(Errc::kInvalidArgument, "document at line " + std::to_string(d.line) + ": apiVersion of " +
                                                    kind + " must be " + k->api_version());
    if (name_of(d.obj).empty())
      return make_error(Errc::kInvalidArgument, "document at line " + std::to_string(d.line) + ": metadata.name is empty");
    d.obj["metadata"]["namespace"] = g.ns;  // always the Gateway's
    out.push_back(std::move(d.obj));
  }
  return out;
}

void WaypointDeployer::set_leader(bool leader) {
  if (leader == leader_) return;
  leader_ = leader;
  if (!leader) {
    if (call_) client_.cancel(call_);
    call_ = 0;
    busy_.reset();
    timer_.stop();
    resync_.stop();
    return;
  }
  plan_.forget();  // what the previous leader left: apply everything again
  if (opts_.resync.count() > 0)
    resync_.start(static_cast<uint64_t>(opts_.resync.count()), static_cast<uint64_t>(opts_.resync.count()), [this] {
      plan_.forget();
      next();
    });
  next();
}

void WaypointDeployer::set_trust_bundle(const std::string& pem) {
  if (pem == bundle_) return;
  bundle_ = pem;
  plan_.forget();
  next();
}

void WaypointDeployer::sync(const std::map<std::string, WaypointGateway>& want) {
  plan_.want = want;
  next();
}

void WaypointDeployer::next() {
  if (stopped_ || !leader_ || busy_) return;
  uint64_t now = uv_now(loop_), wake = 0;
  busy_ = plan_.next(now, &wake);
  if (!busy_) {
    if (wake) timer_.start(wake - now, 0, [this] { next(); });
    return;
  }
  auto objs = render(busy_->g);
  if (!objs) return finish(objs.error().message);
  if (busy_->remove) std::reverse(objs->begin(), objs->end());
  step(std::move(*objs), 0, busy_->remove);
}

void WaypointDeployer::step(std::vector<json> objects, size_t i, bool remove) {
  if (i == objects.size()) return finish("");
  const json& obj = objects[i];
  const k8s::KindInfo* k = k8s::find_kind(obj.value("kind", ""));
  std::string name = name_of(obj);
  k8s::HttpRequest req;
  if (remove) {
    req.method = "DELETE";
    req.path = k8s::object_path(*k, busy_->g.ns, name);
  } else {
    req.method = "POST";
    req.path = k8s::collection_path(*k, busy_->g.ns);
    req.content_type = "application/json";
    req.body = obj.dump();
  }
  std::weak_ptr<bool> alive = alive_;
  std::string what = std::string(k->kind) + " " + busy_->g.ns + "/" + name;
  call_ = client_.start(std::move(req), [this, alive, objects = std::move(objects), i, remove, k, name,
                                         what](Result<k8s::HttpResponse> r) mutable {
    if (alive.expired()) return;
    call_ = 0;
    if (!r) return finish(what + ": " + r.error().message);
    int st = r->status;
    if (remove && (st == 200 || st == 202 || st == 404)) return step(std::move(objects), i + 1, remove);
    if (!remove && (st == 200 || st == 201)) return step(std::move(objects), i + 1, remove);
    if (!remove && st == 409) {
      // It exists: bring it to the template's version.
      k8s::HttpRequest patch;
      patch.method = "PATCH";
      patch.path = k8s::object_path(*k, busy_->g.ns, name);
      patch.content_type = "application/merge-patch+json";
      patch.body = objects[i].dump();
      call_ = client_.start(std::move(patch), [this, alive, objects = std::move(objects), i,
                                               what](Result<k8s::HttpResponse> r2) mutable {
        if (alive.expired()) return;
        call_ = 0;
        if (!r2) return finish(what + ": " + r2.error().message);
        if (r2->status != 200) return finish(k8s::http_error("updating " + what, r2->status, r2->body).message);
        step(std::move(objects), i + 1, false);
      });
      return;
    }
    finish(k8s::http_error((remove ? "deleting " : "creating ") + what, st, r->body).message);
  });
}

void WaypointDeployer::finish(const std::string& error) {
  PlacementPlan::Step done = std::move(*busy_);
  busy_.reset();
  std::string action = done.remove ? "delete" : "apply";
  if (error.empty()) {
    plan_.succeeded(done);
    spdlog::info("waypoints: {} {} done", action, done.key);
  } else {
    spdlog::warn("waypoints: {} {}: {}; retrying in {} ms", action, done.key, error, opts_.retry.count());
    plan_.failed(done, uv_now(loop_) + static_cast<uint64_t>(opts_.retry.count()));
  }
  if (on_done) on_done(action, done.key, error);
  defer(loop_, [this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.lock()) next();
  });
}

}  // namespace warren::controller
