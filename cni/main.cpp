// warren-cni: see plugin.h.
#include <iostream>
#include <iterator>
#include <string>

#include "plugin.h"

int main() {
  auto env = warren::cni::PluginEnv::from_process();
  std::string in;
  if (!env.command.empty() && env.command != "VERSION") {
    in.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto out = warren::cni::run_plugin(env, in);
  std::cout << out.out << std::flush;
  std::cerr << out.err << std::flush;
  return out.exit_code;
}
