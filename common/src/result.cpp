#include "warren/result.h"

namespace warren {

const char* errc_name(Errc c) {
  switch (c) {
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kNotFound: return "not found";
    case Errc::kPermissionDenied: return "permission denied";
    case Errc::kUnavailable: return "unavailable";
    case Errc::kTimeout: return "timeout";
    case Errc::kTls: return "tls";
    case Errc::kProtocol: return "protocol";
    case Errc::kSystem: return "system";
    case Errc::kInternal: return "internal";
  }
  return "unknown";
}

}  // namespace warren
