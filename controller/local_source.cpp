// LocalSource: lifecycle, inotify watches (one per directory) and the
// debounce that turns a burst of events into one scan (local_scan.cpp).
#include "local_source.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>

#include "local_source_impl.h"
#include "validate.h"

namespace warren::controller {

// The uv handle outlives a closed watch (uv_close is asynchronous): it lives
// in its own block, freed by the close callback.
struct LocalSource::Impl::Watch {
  uv_fs_event_t handle;
  Impl* owner = nullptr;
  ino_t ino = 0;  // a directory removed and made again is watched again
};

LocalSource::LocalSource(uv_loop_t* loop, std::string dir, Sink* sink, ValidationListener* listener,
                         LocalSourceOptions opts)
    : impl_(std::make_unique<Impl>(loop)) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  impl_->dir = std::move(dir);
  impl_->sink = sink;
  impl_->listener = listener;
  impl_->opts = opts;
}

LocalSource::~LocalSource() { stop(); }

void LocalSource::set_on_batch(std::function<void()> fn) { impl_->on_batch = std::move(fn); }

Result<void> LocalSource::start() {
  Impl& m = *impl_;
  std::error_code ec;
  if (!std::filesystem::is_directory(m.dir, ec))
    return make_error(Errc::kNotFound, "manifests directory " + m.dir + ": not a directory" +
                                           (ec ? " (" + ec.message() + ")" : ""));
  m.started = true;
  m.stopped = false;
  m.run_scan(true);
  if (m.opts.poll_ms) m.poll.start(m.opts.poll_ms, m.opts.poll_ms, [&m] { m.run_scan(false); });
  spdlog::info("local: {} files, {} objects under {}; watching {} directories", m.files.size(), m.sent.size(), m.dir,
               m.watches.size());
  return {};
}

void LocalSource::stop() {
  Impl& m = *impl_;
  if (m.stopped || !m.started) return;
  m.stopped = true;
  m.debounce.stop();
  m.poll.stop();
  for (auto& [path, w] : m.watches) m.close_watch(w);
  m.watches.clear();
}

void LocalSource::rescan() {
  if (impl_->started && !impl_->stopped) impl_->run_scan(false);
}

std::map<std::string, std::string> LocalSource::errors() const {
  std::map<std::string, std::string> out;
  auto add = [&](const std::string& origin, const std::string& msg) {
    auto& s = out[origin];
    s += (s.empty() ? "" : "\n") + msg;
  };
  for (const auto& [origin, f] : impl_->files) {
    if (!f.error.empty()) add(origin, f.error);
    for (const auto& e : f.object_errors) add(origin, e);
  }
  for (const auto& [key, origins] : impl_->owners)
    for (size_t i = 1; i < origins.size(); i++)
      add(origins[i], format_problems(origins[i], key,
                                      {{"", "also defined in " + origins[0] + ", which is in force; this definition is ignored"}}));
  return out;
}

uint64_t LocalSource::batches() const { return impl_->batches; }

size_t LocalSource::watched_dirs() const { return impl_->watches.size(); }

void LocalSource::Impl::report(const ObjectKey& key, const std::string& origin, const std::string& message) {
  spdlog::error("local: {}", message);
  if (listener) listener->rejected(key, origin, message);
}

void LocalSource::Impl::run_scan(bool first) {
  pending = false;
  debounce.stop();
  auto dirs = scan(first);
  if (!stopped) sync_watches(dirs, first);
}

void LocalSource::Impl::on_event() {
  if (stopped) return;
  uint64_t now = uv_now(loop);
  if (!pending) {
    pending = true;
    first_event_ms = now;
  }
  uint64_t deadline = first_event_ms + opts.max_delay_ms;
  uint64_t wait = opts.debounce_ms;
  if (now + wait > deadline) wait = deadline > now ? deadline - now : 0;
  debounce.start(wait, 0, [this] { run_scan(false); });
}

void LocalSource::Impl::close_watch(Watch* w) {
  w->owner = nullptr;
  uv_fs_event_stop(&w->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->handle),
           [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
}

void LocalSource::Impl::sync_watches(const std::vector<std::string>& dirs, bool first) {
  std::map<std::string, ino_t> want;
  for (const auto& d : dirs) {
    struct stat sb {};
    if (::stat(d.c_str(), &sb) == 0) want[d] = sb.st_ino;
  }
  for (auto it = watches.begin(); it != watches.end();) {
    auto w = want.find(it->first);
    if (w != want.end() && w->second == it->second->ino) {
      ++it;
      continue;
    }
    close_watch(it->second);
    it = watches.erase(it);
  }
  bool added = false;
  for (const auto& [d, ino] : want) {
    if (watches.count(d)) continue;
    auto* w = new Watch;
    w->owner = this;
    w->ino = ino;
    uv_fs_event_init(loop, &w->handle);
    w->handle.data = w;
    int rc = uv_fs_event_start(
        &w->handle,
        [](uv_fs_event_t* h, const char*, int, int) {
          auto* w = static_cast<Watch*>(h->data);
          if (w->owner) w->owner->on_event();
        },
        d.c_str(), 0);
    if (rc != 0) {
      spdlog::warn("local: cannot watch {}: {}; rescanning every 2 s instead", d, uv_strerror(rc));
      uv_close(reinterpret_cast<uv_handle_t*>(&w->handle),
               [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
      if (!opts.poll_ms) {
        opts.poll_ms = 2000;
        poll.start(opts.poll_ms, opts.poll_ms, [this] { run_scan(false); });
      }
      continue;
    }
    watches[d] = w;
    added = true;
  }
  // Files written into a new directory before its watch started: look again.
  if (added && !first) on_event();
}

}  // namespace warren::controller
