// LocalSource's state (internal to local_source.cpp and local_scan.cpp).
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "local_source.h"
#include "warren/defer.h"

namespace warren::controller {

// What identifies a file's content without reading it.
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0, ctime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

// One object of a file's last good parse. The object is kept as its compact
// JSON text (a parsed nlohmann::json costs about ten times as much: at
// 100,000 pods that was 700 MB); `obj` holds the parse only between the scan
// that read it and the feed that hands it to the sink.
struct FileObject {
  ObjectKey key;
  std::string text;
  size_t hash = 0;  // of `text`: unchanged objects are not fed again
  int line = 1;
  nlohmann::json obj;  // null once fed (or when unchanged)
};

struct FileState {
  FileStamp stamp;
  std::vector<FileObject> objects;  // the last good parse
  std::map<ObjectKey, size_t> index;  // key → position in objects
  std::string error;                // current syntax error, if any
  std::vector<std::string> object_errors;  // objects skipped (no kind/name, twice in the file)
};

struct LocalSource::Impl {
  Impl(uv_loop_t* l) : loop(l), debounce(l), poll(l) {}

  uv_loop_t* loop;
  std::string dir;
  Sink* sink = nullptr;
  ValidationListener* listener = nullptr;
  LocalSourceOptions opts;
  std::function<void()> on_batch;

  std::map<std::string, FileState> files;  // by origin
  // Per object, the origins defining it, in the order they were first seen:
  // the front one is in force.
  std::map<ObjectKey, std::vector<std::string>> owners;
  struct Sent {
    std::string origin;
    size_t hash = 0;
  };
  std::map<ObjectKey, Sent> sent;  // what the sink holds
  std::set<std::pair<ObjectKey, std::string>> reported_duplicates;

  struct Watch;
  std::map<std::string, Watch*> watches;  // directory path → inotify watch
  Timer debounce, poll;
  bool pending = false;
  uint64_t first_event_ms = 0;
  uint64_t batches = 0;
  bool started = false, stopped = false;

  // local_scan.cpp: walk DIR, read what changed, feed the sink. Returns the
  // directories found (for watching).
  std::vector<std::string> scan(bool first);
  // local_source.cpp
  void on_event();
  void run_scan(bool first);
  void sync_watches(const std::vector<std::string>& dirs, bool first);
  void close_watch(Watch* w);
  void report(const ObjectKey& key, const std::string& origin, const std::string& message);
};

}  // namespace warren::controller
