#include "local_manifest.h"

#include <string_view>

#include "warren/config.h"

namespace warren::controller {

using nlohmann::json;

namespace {

std::string show(const json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// "YAML: yaml-cpp: error at line 3, column 7: illegal map value" → "line 3, column 7: illegal map value".
std::string tidy_yaml_error(std::string msg, int doc_line) {
  for (std::string_view p : {"YAML: ", "yaml-cpp: ", "error at "})
    if (msg.compare(0, p.size(), p) == 0) msg.erase(0, p.size());
  if (msg.compare(0, 5, "line ") != 0) msg = "document at line " + std::to_string(doc_line) + ": " + msg;
  return msg;
}

// A document separator ("---" or "..." at the start of a line, alone or
// followed by blanks or content).
bool separator(std::string_view line) {
  if (line.size() < 3 || !(line.substr(0, 3) == "---" || line.substr(0, 3) == "...")) return false;
  return line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r';
}

// Only blank lines, comments and directives.
bool blank(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string_view line = text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string_view::npos && line[first] != '#' && line[first] != '%') return false;
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return true;
}

Result<void> add(std::vector<ManifestObject>& out, json doc, int line, int depth = 0) {
  if (doc.is_null()) return {};
  if (!doc.is_object())
    return make_error(Errc::kInvalidArgument, "document at line " + std::to_string(line) +
                                                  ": must be an object, got " + show(doc));
  auto kind = doc.find("kind");
  auto items = doc.find("items");
  bool list = kind != doc.end() && kind->is_string() && kind->get_ref<const std::string&>().size() >= 4 &&
              kind->get_ref<const std::string&>().ends_with("List") && items != doc.end();
  if (!list || depth > 2) {
    out.push_back({std::move(doc), line});
    return {};
  }
  if (items->is_null()) return {};
  if (!items->is_array())
    return make_error(Errc::kInvalidArgument, "document at line " + std::to_string(line) +
                                                  ": items must be an array, got " + show(*items));
  std::string item_kind = *kind == "List" ? "" : kind->get<std::string>().substr(0, kind->get_ref<const std::string&>().size() - 4);
  json api = doc.value("apiVersion", json());
  for (auto& item : *items) {
    if (item.is_object() && !item_kind.empty()) {
      if (!item.contains("kind")) item["kind"] = item_kind;
      if (!item.contains("apiVersion") && api.is_string()) item["apiVersion"] = api;
    }
    if (auto r = add(out, std::move(item), line, depth + 1); !r) return r;
  }
  return {};
}

Result<std::vector<ManifestObject>> parse_json(const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for numbers too large
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line 3, column 5: ..."
    auto close = what.find("] ");
    if (close != std::string::npos) what.erase(0, close + 2);
    if (what.compare(0, 15, "parse error at ") == 0) what.erase(0, 15);
    return make_error(Errc::kInvalidArgument, what);
  }
  std::vector<ManifestObject> out;
  if (doc.is_array()) {
    for (auto& item : doc)
      if (auto r = add(out, std::move(item), 1); !r) return r.error();
  } else if (auto r = add(out, std::move(doc), 1); !r) {
    return r.error();
  }
  return out;
}

}  // namespace

Result<std::vector<ManifestObject>> parse_manifest(const std::string& text, bool is_json) {
  if (is_json) return parse_json(text);
  std::vector<ManifestObject> out;
  // Split at document separators; each document is parsed alone (warren's
  // yaml_to_json takes one), padded with newlines so that yaml-cpp's line
  // numbers are the file's.
  int line_no = 1, doc_line = 1, first_line = 1;  // where the text starts; where the document's content does
  std::string doc;
  auto finish = [&]() -> Result<void> {
    if (blank(doc)) return {};
    auto j = config::yaml_to_json(std::string(doc_line - 1, '\n') + doc);
    if (!j) return make_error(Errc::kInvalidArgument, tidy_yaml_error(j.error().message, first_line));
    return add(out, std::move(j.value()), first_line);
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    std::string_view line(text.data() + pos, (end == std::string::npos ? text.size() : end) - pos);
    if (separator(line)) {
      if (auto r = finish(); !r) return r.error();
      doc.assign(3, ' ');  // keeps columns of content after the marker ("--- {a: 1}")
      doc.append(line.substr(3));
      doc += '\n';
      doc_line = line_no;
      bool inline_content = line.substr(3).find_first_not_of(" \t\r") != std::string_view::npos;
      first_line = inline_content ? line_no : line_no + 1;
      if (line.substr(0, 3) == "...") doc.clear(), doc_line = first_line = line_no + 1;
    } else {
      doc.append(line);
      doc += '\n';
    }
    if (end == std::string::npos) break;
    pos = end + 1;
    line_no++;
  }
  if (auto r = finish(); !r) return r.error();
  return out;
}

}  // namespace warren::controller
