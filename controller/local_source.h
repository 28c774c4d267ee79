// The local source (`warren-controller --manifests DIR`): every *.yaml, *.yml
// and *.json under DIR, at any depth, is read as Kubernetes manifests and fed
// to a Sink; DIR is then watched and edits become upserts and removes.
//
// - Files: multi-document YAML ("---"), JSON (an object or an array), and
//   `kind: List` items (local_manifest.h). Hidden files and directories
//   (".name") and editor leftovers ("#name#", "name~") are skipped.
// - Origins (for messages) are paths relative to DIR: "shop/policy.yaml".
// - Defaults, as `kubectl apply` and a running cluster would give them:
//   namespaced objects without metadata.namespace are in "default"; a Pod
//   without metadata.uid gets "<namespace>/<name>"; a Pod without
//   status.phase is taken as Running (local mode has no kubelet). Pods may
//   name the simulated node they run on (spec.nodeName) and give their IP in
//   status.podIP / status.podIPs.
// - A file that does not parse (YAML or JSON syntax) rejects that file's
//   objects only: their last good versions stay in force, and the error
//   (file and line) is logged and reported to the listener.
// - An object defined in two files: the file that defined it first (at the
//   first scan, in path order) keeps it; the other definition is an error
//   naming both files. When the first file drops it, the other takes over,
//   so an object moving between files is never lost.
// - Watching: inotify through one uv_fs_event per directory (libuv's recursive
//   flag does nothing on Linux); new subdirectories are watched as they are
//   found. Any event (re)starts a debounce timer (50 ms) and the rescan then
//   compares each file's inode, size, mtime and ctime: edits in place and
//   rename-over (editors' atomic save) both show. A burst of events is one
//   batch, after which on_batch runs (the controller flushes the model).
//   If a directory cannot be watched (inotify limits), DIR is rescanned every
//   2 s instead.
// - Files are read on the loop thread: local mode is for small clusters.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "source.h"
#include "warren/result.h"

namespace warren::controller {

struct LocalSourceOptions {
  uint64_t debounce_ms = 50;    // quiet time after the last event before a rescan
  uint64_t max_delay_ms = 500;  // a burst still rescans at most this long after its first event
  uint64_t poll_ms = 0;         // also rescan periodically (0: only on events)
  size_t max_file_size = 32u << 20;
};

class LocalSource {
 public:
  // `listener` (optional) hears the source's own rejections (syntax errors,
  // duplicate definitions, objects without kind or name); the Sink's model
  // reports the rest.
  LocalSource(uv_loop_t* loop, std::string dir, Sink* sink, ValidationListener* listener = nullptr,
              LocalSourceOptions opts = {});
  ~LocalSource();
  LocalSource(const LocalSource&) = delete;
  LocalSource& operator=(const LocalSource&) = delete;

  // Runs after every batch that fed the sink, and after the first scan.
  void set_on_batch(std::function<void()> fn);

  // Scans DIR (synchronously), feeds every object, calls synced() and
  // on_batch, then watches. Fails when DIR is not a readable directory.
  Result<void> start();
  // Stops watching (idempotent; the destructor calls it).
  void stop();
  // Rescans now (as a watch event would, without the debounce).
  void rescan();

  // Current problems by origin: syntax errors, duplicates, objects without
  // kind or name ("shop/bad.yaml" → "shop/bad.yaml: line 3, column 7: ...").
  std::map<std::string, std::string> errors() const;
  // Batches fed so far (the first scan is batch 1).
  uint64_t batches() const;
  // Directories watched with inotify.
  size_t watched_dirs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace warren::controller
