// warren-demo's output: sections, commands as a reader could type them, their
// output, and verified claims (a claim that does not hold ends the demo).
#pragma once

#include <signal.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace warren::demo {

inline volatile sig_atomic_t g_signal = 0;
inline bool g_tty = false;

struct Interrupted {};
struct StepFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::string bold(const std::string& s) { return g_tty ? "\033[1m" + s + "\033[0m" : s; }
inline std::string dim(const std::string& s) { return g_tty ? "\033[2m" + s + "\033[0m" : s; }

inline void checkpoint() {
  if (g_signal) throw Interrupted{};
}

inline void title(const std::string& s) {
  checkpoint();
  std::cout << "\n" << bold(s) << "\n";
}
inline void say(const std::string& s) { std::cout << "  " << s << std::endl; }
// A command as the reader could type it (where: the prompt, e.g. the pod).
inline void cmd(const std::string& where, const std::string& c) {
  std::cout << "  " << dim("[" + where + "]$ ") << c << std::endl;
}
// Output, indented, at most max_lines lines of at most width characters.
inline void out(const std::string& text, size_t max_lines = 6, size_t width = 110) {
  std::istringstream in(text);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    if (++n > max_lines) {
      std::cout << "    ...\n";
      break;
    }
    if (line.size() > width) line = line.substr(0, width - 3) + "...";
    std::cout << "    " << line << "\n";
  }
}
// A verified claim, printed with a check mark; the demo stops if it does not hold.
inline void claim(bool ok, const std::string& what, const std::string& detail = "") {
  checkpoint();  // a failure caused by Ctrl-C killing a child is not a failed step
  if (!ok) throw StepFailed(what + (detail.empty() ? "" : "\n" + detail));
  std::cout << "  " << (g_tty ? "\033[32m✓\033[0m " : "✓ ") << what << std::endl;
}
// A precondition of the tour (not worth a line of output).
inline void must(bool ok, const std::string& what, const std::string& detail = "") {
  checkpoint();
  if (!ok) throw StepFailed(what + (detail.empty() ? "" : "\n" + detail));
}

inline void pause_for(std::chrono::milliseconds d) {
  using namespace std::chrono_literals;
  for (auto t = 0ms; t < d; t += 50ms) {
    checkpoint();
    std::this_thread::sleep_for(50ms);
  }
}

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}
inline bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

inline std::string last_line_with(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  std::string found;
  for (std::string line; std::getline(in, line);)
    if (contains(line, needle)) found = line;
  return found;
}

// A log line without its timestamp and level ("TS\tlevel\tmessage").
inline std::string log_msg(const std::string& line) {
  auto p = line.find('\t');
  if (p != std::string::npos) p = line.find('\t', p + 1);
  return p == std::string::npos ? line : line.substr(p + 1);
}

// A manifest file without its leading comment block (the part a reader needs).
inline std::string without_comments(const std::string& yaml) {
  std::istringstream in(yaml);
  std::string o;
  for (std::string line; std::getline(in, line);)
    if (!starts_with(line, "#")) o += line + "\n";
  return o;
}

}  // namespace warren::demo
