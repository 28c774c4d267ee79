// LocalSource's scan: walk DIR, parse the files whose stamp changed, and feed
// the sink the net effect (local_source.h has the rules).
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "local_manifest.h"
#include "local_source_impl.h"
#include "validate.h"

namespace warren::controller {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool manifest_name(const std::string& name) {
  if (name.empty() || name[0] == '.' || name[0] == '#' || name.back() == '~') return false;
  for (const char* ext : {".yaml", ".yml", ".json"})
    if (name.size() > strlen(ext) && name.ends_with(ext)) return true;
  return false;
}

void walk(const std::string& path, const std::string& rel, std::map<std::string, FileStamp>& files,
          std::vector<std::string>& dirs) {
  std::error_code ec;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::string full = path + "/" + name, r = rel.empty() ? name : rel + "/" + name;
    std::error_code sec;
    bool link = it->is_symlink(sec);
    auto st = it->status(sec);  // follows symlinks
    if (sec) continue;
    if (fs::is_directory(st)) {
      if (link) continue;  // no loops through directory symlinks
      dirs.push_back(full);
      walk(full, r, files, dirs);
    } else if (fs::is_regular_file(st) && manifest_name(name)) {
      struct stat sb {};
      if (::stat(full.c_str(), &sb) != 0) continue;
      files[r] = FileStamp{sb.st_dev, sb.st_ino, sb.st_size,
                           int64_t(sb.st_mtim.tv_sec) * 1'000'000'000 + sb.st_mtim.tv_nsec,
                           int64_t(sb.st_ctim.tv_sec) * 1'000'000'000 + sb.st_ctim.tv_nsec};
    }
  }
}

Result<std::string> read_file(const std::string& path, size_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::sys("cannot read");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > max)
    return make_error(Errc::kInvalidArgument, "larger than " + std::to_string(max >> 20) + " MiB, not read");
  return text;
}

// kubectl's and a cluster's defaults for what local manifests leave out.
void apply_defaults(json& obj) {
  if (!obj.is_object()) return;
  std::string kind = key_of(obj).kind;
  auto& md = obj["metadata"];
  if (!md.is_object()) return;
  bool namespaced = is_known_kind(kind) && !is_cluster_scoped(kind);
  if (namespaced && (!md.contains("namespace") || md["namespace"].is_null() || md["namespace"] == ""))
    md["namespace"] = "default";
  if (kind != "Pod") return;
  if (!md.contains("uid") && md.value("name", json()).is_string() && md["namespace"].is_string())
    md["uid"] = md["namespace"].get<std::string>() + "/" + md["name"].get<std::string>();
  auto& status = obj["status"];
  if (status.is_null()) status = json::object();
  if (status.is_object() && !status.contains("phase")) status["phase"] = "Running";
}

}  // namespace

std::vector<std::string> LocalSource::Impl::scan(bool first) {
  std::error_code ec;
  if (!first && !fs::is_directory(dir, ec)) {
    // Gone (unmounted, being replaced): keep every object rather than remove
    // the whole mesh's config, and look again every 2 s.
    spdlog::error("local: {} is not a directory any more; keeping the last objects read", dir);
    if (!opts.poll_ms) {
      opts.poll_ms = 2000;
      poll.start(opts.poll_ms, opts.poll_ms, [this] { run_scan(false); });
    }
    std::vector<std::string> keep;
    for (const auto& [path, w] : watches) keep.push_back(path);
    return keep;
  }
  std::map<std::string, FileStamp> found;
  std::vector<std::string> dirs{dir};
  walk(dir, "", found, dirs);

  std::set<ObjectKey> affected;
  std::vector<std::string> reparsed;  // files read in this scan
  auto drop_owner = [&](const ObjectKey& k, const std::string& origin) {
    auto o = owners.find(k);
    if (o == owners.end()) return;
    std::erase(o->second, origin);
    if (o->second.empty()) owners.erase(o);
    affected.insert(k);
  };

  for (auto it = files.begin(); it != files.end();) {
    if (found.count(it->first)) {
      ++it;
      continue;
    }
    spdlog::info("local: {} removed", it->first);
    for (const auto& o : it->second.objects) drop_owner(o.key, it->first);
    it = files.erase(it);
  }

  for (const auto& [origin, stamp] : found) {
    auto it = files.find(origin);
    if (it != files.end() && it->second.stamp == stamp) continue;
    if (it == files.end()) it = files.emplace(origin, FileState{}).first;
    FileState& f = it->second;
    f.stamp = stamp;
    reparsed.push_back(origin);
    Result<std::vector<ManifestObject>> parsed = make_error(Errc::kInternal, "");
    auto text = read_file(dir + "/" + origin, opts.max_file_size);
    try {  // this runs in libuv callbacks: a bug must not take the controller down
      if (text) parsed = parse_manifest(*text, origin.ends_with(".json"));
      else parsed = text.error();
      if (parsed)
        for (auto& m : *parsed) apply_defaults(m.obj);
    } catch (const std::exception& e) {
      parsed = make_error(Errc::kInternal, std::string("internal error: ") + e.what());
    }
    if (!parsed) {
      std::string msg = origin + ": " + parsed.error().message;
      if (msg != f.error) report(ObjectKey{}, origin, msg + (f.objects.empty() ? "" : " (its objects keep their last good version)"));
      f.error = msg;
      continue;
    }
    if (!f.error.empty()) spdlog::info("local: {} parses again", origin);
    f.error.clear();

    std::vector<FileObject> next;
    std::vector<std::string> object_errors;
    std::map<ObjectKey, int> lines;
    for (auto& m : *parsed) {
      ObjectKey key = key_of(m.obj);
      std::string where = origin + ":" + std::to_string(m.line);
      if (key.kind.empty() || key.name.empty()) {
        object_errors.push_back(
            format_problems(where, key, {{key.kind.empty() ? "kind" : "metadata.name", "is required"}}));
        continue;
      }
      if (auto [l, fresh] = lines.emplace(key, m.line); !fresh) {
        object_errors.push_back(format_problems(
            where, key, {{"", "defined twice in this file (from line " + std::to_string(l->second) +
                                  "); the first definition is used"}}));
        continue;
      }
      std::string text = m.obj.dump(-1, ' ', false, json::error_handler_t::replace);
      size_t hash = std::hash<std::string>{}(text);
      next.push_back(FileObject{std::move(key), std::move(text), hash, m.line, std::move(m.obj)});
    }
    for (const auto& e : object_errors)
      if (std::find(f.object_errors.begin(), f.object_errors.end(), e) == f.object_errors.end())
        report(ObjectKey{}, origin, e);
    f.object_errors = std::move(object_errors);

    for (const auto& o : f.objects)
      if (!lines.count(o.key)) drop_owner(o.key, origin);  // `lines` holds the keys of `next`
    for (const auto& o : next) {
      auto& list = owners[o.key];
      if (std::find(list.begin(), list.end(), origin) == list.end()) list.push_back(origin);
      affected.insert(o.key);
    }
    f.objects = std::move(next);
    f.index.clear();
    for (size_t i = 0; i < f.objects.size(); i++) f.index.emplace(f.objects[i].key, i);
  }

  bool fed = false;
  for (const auto& k : affected) {
    auto o = owners.find(k);
    if (o == owners.end()) {
      if (sent.erase(k)) {
        sink->remove(k);
        fed = true;
      }
      for (auto d = reported_duplicates.lower_bound({k, ""}); d != reported_duplicates.end() && d->first == k;)
        d = reported_duplicates.erase(d);
      continue;
    }
    const std::string& owner = o->second.front();
    FileState& of = files[owner];
    auto at = of.index.find(k);
    if (at == of.index.end()) continue;  // cannot happen: owners mirrors files
    FileObject* fo = &of.objects[at->second];
    auto s = sent.find(k);
    if (s == sent.end() || s->second.origin != owner || s->second.hash != fo->hash) {
      // Parsed in this scan: handed over as is; else (another file gave up
      // the object) parsed again from the text kept.
      json obj = fo->obj.is_null() ? json::parse(fo->text, nullptr, false) : std::move(fo->obj);
      fo->obj = nullptr;
      sink->upsert(owner, std::move(obj));
      sent[k] = Sent{owner, fo->hash};
      fed = true;
    }
    for (auto d = reported_duplicates.lower_bound({k, ""}); d != reported_duplicates.end() && d->first == k;) {
      bool still = std::find(o->second.begin() + 1, o->second.end(), d->second) != o->second.end();
      d = still ? std::next(d) : reported_duplicates.erase(d);
    }
    for (size_t i = 1; i < o->second.size(); i++)
      if (reported_duplicates.insert({k, o->second[i]}).second)
        report(k, o->second[i],
               format_problems(o->second[i], k,
                               {{"", "also defined in " + owner + ", which is in force; this definition is ignored"}}));
  }
  // Parses not fed (unchanged objects, duplicates not in force) are dropped.
  for (const auto& origin : reparsed)
    if (auto f = files.find(origin); f != files.end())
      for (auto& o : f->second.objects) o.obj = nullptr;
  if (fed || first) {
    batches++;
    spdlog::debug("local: batch {} ({} files, {} objects)", batches, files.size(), sent.size());
  }
  if (first) sink->synced();
  if ((fed || first) && on_batch) on_batch();
  return dirs;
}

}  // namespace warren::controller
