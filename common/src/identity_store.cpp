// IdentityStore: per-identity certificate files and the trust bundle, with
// reload that keeps the last good version of anything broken.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "warren/certs.h"

namespace warren::certs {

// ---- IdentityStore ------------------------------------------------------------------------

namespace {

constexpr const char* kChainFile = "cert-chain.pem";
constexpr const char* kKeyFile = "key.pem";

IdentityStore::FileStamp stamp_of(const std::string& path) {
  IdentityStore::FileStamp s;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.ino = st.st_ino;
  s.size = static_cast<unsigned long long>(st.st_size);
  s.mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return s;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Sorted names of the subdirectories of `dir` (hidden ones skipped).
Result<std::vector<std::string>> subdirs(const std::string& dir) {
  struct DirCloser {
    void operator()(DIR* d) const { ::closedir(d); }
  };
  std::unique_ptr<DIR, DirCloser> d(::opendir(dir.c_str()));
  if (!d) return Error::sys(dir);
  std::vector<std::string> out;
  while (dirent* e = ::readdir(d.get())) {
    if (e->d_name[0] == '.') continue;
    std::string name = e->d_name;
    if (is_dir(dir + "/" + name)) out.push_back(std::move(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Error join_errors(const std::vector<Error>& errs) {
  std::string msg;
  for (const Error& e : errs) {
    if (!msg.empty()) msg += "\n";
    msg += e.message;
  }
  return make_error(errs.front().code, msg);
}

}  // namespace

std::vector<std::string> IdentityStore::scan(std::vector<Error>* errors) const {
  std::vector<std::string> rels;
  auto nss = subdirs(dir_);
  if (!nss) {
    errors->push_back(nss.error());
    return rels;
  }
  for (const std::string& ns : *nss) {
    auto sas = subdirs(dir_ + "/" + ns);
    if (!sas) {
      errors->push_back(sas.error());
      continue;
    }
    for (const std::string& sa : *sas) {
      std::string rel = ns + "/" + sa;
      std::string base = dir_ + "/" + rel + "/";
      if (stamp_of(base + kChainFile).exists || stamp_of(base + kKeyFile).exists)
        rels.push_back(std::move(rel));
    }
  }
  return rels;
}

Result<std::shared_ptr<const Identity>> IdentityStore::load_one(const std::string& rel) const {
  std::string cert_path = dir_ + "/" + rel + "/" + kChainFile;
  std::string key_path = dir_ + "/" + rel + "/" + kKeyFile;
  auto certs = read_certs_file(cert_path);
  if (!certs) return certs.error();
  auto key = read_key_file(key_path);
  if (!key) return key.error();
  auto id = std::make_shared<Identity>();
  id->leaf = std::move(certs->front());
  for (size_t i = 1; i < certs->size(); ++i) id->chain.push_back(std::move((*certs)[i]));
  auto uri = spiffe_uri_of(id->leaf.get());
  if (!uri)
    return make_error(Errc::kInvalidArgument,
                      cert_path + ": the leaf certificate has no single spiffe:// URI SAN");
  if (!key_matches(id->leaf.get(), key->get()))
    return make_error(Errc::kInvalidArgument,
                      key_path + ": private key does not match the certificate in " + cert_path);
  id->spiffe_id = std::move(*uri);
  id->key = std::move(*key);
  id->not_before = not_before_of(id->leaf.get());
  id->not_after = not_after_of(id->leaf.get());
  return std::shared_ptr<const Identity>(std::move(id));
}

Result<void> IdentityStore::load_roots() {
  FileStamp st = stamp_of(root_file_);
  root_stamp_ = st;  // a broken bundle is reported once, not on every reload
  auto roots = read_certs_file(root_file_);
  if (!roots) return roots.error();
  roots_ = std::move(*roots);
  return {};
}

void IdentityStore::rebuild_index(std::vector<Error>* errors) {
  by_id_.clear();
  for (auto& [rel, e] : entries_) {
    if (!e.id) continue;
    auto [it, inserted] = by_id_.emplace(e.id->spiffe_id, e.id);
    if (!inserted) {
      errors->push_back(
          make_error(Errc::kInvalidArgument, dir_ + "/" + rel + "/" + kChainFile + ": identity " +
                                                 e.id->spiffe_id +
                                                 " is already served from another directory"));
    }
  }
}

Result<void> IdentityStore::load(const std::string& dir, const std::string& root_file) {
  IdentityStore fresh;
  fresh.dir_ = dir;
  fresh.root_file_ = root_file;
  if (auto r = fresh.load_roots(); !r) return r.error().wrap("loading trust bundle");
  std::vector<Error> errors;
  if (!is_dir(dir)) return make_error(Errc::kNotFound, dir + ": not a directory");
  for (const std::string& rel : fresh.scan(&errors)) {
    Entry e;
    e.cert_stamp = stamp_of(dir + "/" + rel + "/" + kChainFile);
    e.key_stamp = stamp_of(dir + "/" + rel + "/" + kKeyFile);
    auto id = fresh.load_one(rel);
    if (id) {
      e.id = std::move(*id);
    } else {
      errors.push_back(id.error());
    }
    fresh.entries_.emplace(rel, std::move(e));
  }
  fresh.rebuild_index(&errors);
  *this = std::move(fresh);
  if (!errors.empty()) return join_errors(errors);
  return {};
}

IdentityStore::ReloadReport IdentityStore::reload() {
  ReloadReport rep;
  if (stamp_of(root_file_) != root_stamp_) {
    std::vector<X509Ptr> old = std::move(roots_);
    if (auto r = load_roots(); r) {
      rep.roots_changed = true;
    } else {
      roots_ = std::move(old);
      rep.errors.push_back(r.error().wrap("trust bundle kept"));
    }
  }
  size_t scan_errors = rep.errors.size();
  std::vector<std::string> rels = scan(&rep.errors);
  if (rep.errors.size() != scan_errors && rels.empty()) return rep;  // unreadable: keep all

  auto before = by_id_;
  std::map<std::string, Entry> next;
  for (const std::string& rel : rels) {
    Entry e;
    e.cert_stamp = stamp_of(dir_ + "/" + rel + "/" + kChainFile);
    e.key_stamp = stamp_of(dir_ + "/" + rel + "/" + kKeyFile);
    auto old = entries_.find(rel);
    if (old != entries_.end() && old->second.cert_stamp == e.cert_stamp &&
        old->second.key_stamp == e.key_stamp) {
      next.emplace(rel, std::move(old->second));
      continue;
    }
    auto id = load_one(rel);
    if (id) {
      e.id = std::move(*id);
    } else {
      rep.errors.push_back(id.error());
      if (old != entries_.end()) e.id = old->second.id;  // keep serving the last good one
    }
    next.emplace(rel, std::move(e));
  }
  entries_ = std::move(next);
  rebuild_index(&rep.errors);

  for (const auto& [id, ptr] : by_id_) {
    auto it = before.find(id);
    if (it == before.end()) {
      rep.added.push_back(id);
    } else if (it->second != ptr) {
      rep.updated.push_back(id);
    }
  }
  for (const auto& [id, ptr] : before)
    if (!by_id_.count(id)) rep.removed.push_back(id);
  return rep;
}

std::shared_ptr<const Identity> IdentityStore::get(const std::string& spiffe_id) const {
  auto it = by_id_.find(spiffe_id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::vector<std::string> IdentityStore::ids() const {
  std::vector<std::string> out;
  for (const auto& [id, ptr] : by_id_) out.push_back(id);
  return out;
}

std::vector<X509*> IdentityStore::root_ptrs() const {
  std::vector<X509*> out;
  for (const auto& r : roots_) out.push_back(r.get());
  return out;
}

}  // namespace warren::certs
