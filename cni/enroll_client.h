// The plugin's side of enrollment: one blocking request/reply on the node's
// Unix socket, bounded by a deadline.
#pragma once

#include <string>

#include "enroll_proto.h"
#include "warren/result.h"

namespace warren::cni {

// Connects to `socket_path`, sends `req`, reads one reply line. Errors:
// kUnavailable (no server: missing socket, refused), kTimeout (no complete
// reply within timeout_ms, connect included), kProtocol (the reply is not a
// valid reply line), kSystem (other system call failures).
// A reply with ok=false is a successful call: check reply.ok.
Result<EnrollReply> enroll_call(const std::string& socket_path, const EnrollRequest& req,
                                int timeout_ms);

}  // namespace warren::cni
