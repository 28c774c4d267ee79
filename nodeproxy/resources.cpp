#include "resources.h"

#include <set>
#include <sstream>
#include <vector>

namespace warren::node {

const char* array_of(const std::string& id) {
  static const std::pair<const char*, const char*> kinds[] = {
      {"workload/", "workloads"},          {"service/", "services"},
      {"policy/", "policies"},             {"peerauth/", "peerAuthentications"},
      {"namespace/", "namespaces"}};
  for (const auto& [prefix, array] : kinds)
    if (id.rfind(prefix, 0) == 0) return array;
  return "";
}

namespace {

// "/workloads/3/ips/0: ..." -> ("workloads", 3, "/ips/0: ...").
bool split_pointer(const std::string& line, std::string* array, size_t* index, std::string* rest) {
  if (line.size() < 2 || line[0] != '/') return false;
  size_t a = line.find('/', 1);
  if (a == std::string::npos) return false;
  *array = line.substr(1, a - 1);
  size_t b = a + 1, e = b;
  while (e < line.size() && std::isdigit(static_cast<unsigned char>(line[e]))) ++e;
  if (e == b) return false;
  *index = std::stoul(line.substr(b, e - b));
  *rest = line.substr(e);
  return true;
}

}  // namespace

Assembled assemble(const nlohmann::json& bootstrap, std::map<std::string, nlohmann::json>& resources) {
  Assembled out;
  std::set<std::string> excluded;
  // Each round removes the resources the parser named; a few rounds settle
  // it (an error can only surface once the one before it is out of the way).
  for (int round = 0; round < 4; ++round) {
    nlohmann::json doc = bootstrap;
    for (const char* a : {"workloads", "services", "policies", "peerAuthentications", "namespaces"})
      doc[a] = nlohmann::json::array();
    std::map<std::string, std::vector<std::string>> ids;  // array -> ids in order
    for (auto& [id, body] : resources) {
      const char* a = array_of(id);
      if (!*a || excluded.count(id)) continue;
      doc[a].push_back(std::move(body));
      ids[a].push_back(id);
    }
    auto r = config::parse(doc);
    // Give the bodies back.
    for (auto& [a, list] : ids)
      for (size_t i = 0; i < list.size(); ++i) resources[list[i]] = std::move(doc[a][i]);
    if (r) {
      out.snap = *r;
      return out;
    }
    std::istringstream lines(r.error().message);
    std::string line;
    bool attributed = false, unattributed = false;
    while (std::getline(lines, line)) {
      std::string array, rest;
      size_t index = 0;
      if (split_pointer(line, &array, &index, &rest) && ids.count(array) &&
          index < ids[array].size()) {
        const std::string& id = ids[array][index];
        auto& why = out.rejected[id];
        why += (why.empty() ? "" : "; ") + (rest.size() > 2 && rest.rfind(": ", 0) == 0
                                                ? rest.substr(2)
                                                : rest.substr(rest.find_first_not_of('/')));
        excluded.insert(id);
        attributed = true;
      } else {
        unattributed = true;
        out.error += (out.error.empty() ? "" : "\n") + line;
      }
    }
    if (unattributed || !attributed) {
      out.snap = nullptr;
      if (out.error.empty()) out.error = r.error().message;
      return out;
    }
  }
  out.error = "resources still rejected after several rounds";
  return out;
}

}  // namespace warren::node
