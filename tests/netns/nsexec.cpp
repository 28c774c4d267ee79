// warren-nsexec [--cgroup DIR] --netns PATH -- PROGRAM ARGS...
// Joins the cgroup v2 directory DIR (before anything else, so every socket
// the program opens belongs to it), enters the network namespace at PATH and
// execs PROGRAM (looked up in PATH). Exit 126 when setup fails, 127 when the
// program cannot be executed.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string cgroup, netns;
  int i = 1;
  for (; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--") {
      i++;
      break;
    }
    if (a == "--cgroup" && i + 1 < argc) {
      cgroup = argv[++i];
    } else if (a == "--netns" && i + 1 < argc) {
      netns = argv[++i];
    } else {
      std::fprintf(stderr, "usage: warren-nsexec [--cgroup DIR] --netns PATH -- PROGRAM ARGS...\n");
      return 126;
    }
  }
  if (i >= argc || netns.empty()) {
    std::fprintf(stderr, "warren-nsexec: need --netns and a program\n");
    return 126;
  }
  if (!cgroup.empty()) {
    std::string procs = cgroup + "/cgroup.procs";
    int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) != 1) {
      std::fprintf(stderr, "warren-nsexec: join %s: %s\n", procs.c_str(), std::strerror(errno));
      return 126;
    }
    close(fd);
  }
  int nfd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
  if (nfd < 0 || setns(nfd, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "warren-nsexec: setns %s: %s\n", netns.c_str(), std::strerror(errno));
    return 126;
  }
  close(nfd);
  execvp(argv[i], argv + i);
  std::fprintf(stderr, "warren-nsexec: exec %s: %s\n", argv[i], std::strerror(errno));
  return 127;
}
