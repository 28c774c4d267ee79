// YAML manifests → JSON, from yaml-cpp's parse events (see the note below on
// why not through YAML::Node).
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <sstream>
#include <string>
#include <vector>

#include "warren/config.h"

namespace warren::config {

// ---- YAML ----

namespace {

// Builds JSON straight from yaml-cpp's parse events. Going through
// YAML::Node is not safe on untrusted text: yaml-cpp 0.7 loops forever,
// allocating, on inputs like "[]," (a flow collection followed by a comma in
// block context; found by fuzz_config). Its event loop does emit events while
// looping, so a budget on events stops it. The same budget bounds alias
// expansion ("billion laughs").
class JsonBuilder : public YAML::EventHandler {
 public:
  struct Abort {
    std::string msg;
  };
  explicit JsonBuilder(size_t text_size) : event_budget_(4 * text_size + 64) {}

  std::vector<nlohmann::json> docs;

  void OnDocumentStart(const YAML::Mark& m) override { tick(m); }
  void OnDocumentEnd() override { tick(); }
  void OnNull(const YAML::Mark& m, YAML::anchor_t anchor) override {
    tick(m);
    complete(nullptr, std::string(), anchor, 1, m);
  }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t anchor) override {
    tick(m);
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) throw Abort{at(m) + "unknown alias"};
    nodes_ += it->second.second;
    if (nodes_ > kMaxNodes) throw Abort{at(m) + "document too large (alias expansion?)"};
    complete(it->second.first, std::nullopt, 0, it->second.second, m);
  }
  void OnScalar(const YAML::Mark& m, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    tick(m);
    bool quoted = tag == "!" || tag == "tag:yaml.org,2002:str";
    complete(quoted ? nlohmann::json(value) : plain_scalar(value), value, anchor, 1, m);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(m, nlohmann::json::array(), anchor);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(m, nlohmann::json::object(), anchor);
  }
  void OnMapEnd() override { close(); }

 private:
  static constexpr size_t kMaxNodes = 1'000'000;
  static constexpr size_t kMaxDepth = 64;
  struct Frame {
    nlohmann::json value;
    YAML::anchor_t anchor;
    size_t nodes = 1;
    std::optional<std::string> key;  // maps: the key waiting for its value
    YAML::Mark mark;
  };

  static std::string at(const YAML::Mark& m) { return "line " + std::to_string(m.line + 1) + ": "; }

  void tick(const YAML::Mark& m = YAML::Mark::null_mark()) {
    if (++events_ > event_budget_) throw Abort{"parser does not make progress (malformed input)"};
    if (++nodes_ > kMaxNodes) throw Abort{"document too large"};
  }
  void open(const YAML::Mark& m, nlohmann::json v, YAML::anchor_t anchor) {
    tick(m);
    if (stack_.size() >= kMaxDepth) throw Abort{at(m) + "nesting deeper than 64 levels"};
    stack_.push_back(Frame{std::move(v), anchor, 1, std::nullopt, m});
  }
  void close() {
    tick();
    if (stack_.empty()) throw Abort{"unbalanced collection end"};
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    if (f.value.is_object() && f.key) f.value[*f.key] = nullptr;
    complete(std::move(f.value), std::nullopt, f.anchor, f.nodes, f.mark);
  }
  // A finished value; `text` is its scalar text (usable as a mapping key).
  void complete(nlohmann::json v, std::optional<std::string> text, YAML::anchor_t anchor,
                size_t nodes, const YAML::Mark& m) {
    if (anchor) anchors_[anchor] = {v, nodes};
    if (stack_.empty()) {
      docs.push_back(std::move(v));
      return;
    }
    Frame& parent = stack_.back();
    parent.nodes += nodes;
    if (parent.value.is_array()) {
      parent.value.push_back(std::move(v));
    } else if (!parent.key) {
      if (!text) throw Abort{at(m) + "mapping keys must be scalars"};
      if (parent.value.contains(*text)) throw Abort{at(m) + "duplicate key \"" + *text + "\""};
      parent.key = std::move(*text);
    } else {
      parent.value[*parent.key] = std::move(v);
      parent.key.reset();
    }
  }

  size_t event_budget_;
  size_t events_ = 0, nodes_ = 0;
  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, std::pair<nlohmann::json, size_t>> anchors_;

 public:
  // YAML 1.2 core schema for plain scalars.
  static nlohmann::json plain_scalar(const std::string& s) {
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    size_t sign = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (all_digits(s, sign)) {
      int64_t v = 0;
      const char* b = s.data() + (s[0] == '+' ? 1 : 0);
      auto [p, ec] = std::from_chars(b, s.data() + s.size(), v);
      if (ec == std::errc() && p == s.data() + s.size()) return v;
      return s;  // out of range: keep the text
    }
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), v, s[1] == 'x' ? 16 : 8);
      if (ec == std::errc() && p == s.data() + s.size()) return v;
      return s;
    }
    // Floats: digits with one '.', optionally an exponent.
    bool digit = false, dot = false, exp = false;
    for (size_t i = sign; i < s.size(); i++) {
      char c = s[i];
      if (c >= '0' && c <= '9') {
        digit = true;
      } else if (c == '.' && !dot && !exp) {
        dot = true;
      } else if ((c == 'e' || c == 'E') && digit && !exp) {
        exp = true;
        if (i + 1 < s.size() && (s[i + 1] == '+' || s[i + 1] == '-')) i++;
        if (i + 1 >= s.size()) return s;
      } else {
        return s;
      }
    }
    if (digit && (dot || exp)) {
      errno = 0;
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (errno == 0 && end == s.c_str() + s.size()) return d;
    }
    return s;
  }

 private:
  static bool all_digits(std::string_view s, size_t from) {
    if (from >= s.size()) return false;
    for (size_t i = from; i < s.size(); i++)
      if (s[i] < '0' || s[i] > '9') return false;
    return true;
  }
};

}  // namespace

Result<nlohmann::json> yaml_to_json(const std::string& text) {
  std::istringstream in(text);
  JsonBuilder b(text.size());
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(b)) {
      if (b.docs.size() > 1) break;
    }
  } catch (const YAML::Exception& e) {
    return make_error(Errc::kInvalidArgument, std::string("YAML: ") + e.what());
  } catch (const JsonBuilder::Abort& a) {
    return make_error(Errc::kInvalidArgument, "YAML: " + a.msg);
  }
  if (b.docs.size() != 1)
    return make_error(Errc::kInvalidArgument, "YAML: expected one document, found " +
                                                  std::string(b.docs.empty() ? "none" : "several"));
  return std::move(b.docs[0]);
}

}  // namespace warren::config
