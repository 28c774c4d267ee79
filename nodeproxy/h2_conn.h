// The HTTP/2 connection lives in common/ (the controller's push server and the
// node's controller client use it too); the node proxy's code names it here.
#pragma once

#include "warren/h2_conn.h"

namespace warren::node {
using h2::find_header;
using h2::H2Conn;
using h2::H2Limits;
using h2::Headers;
using h2::StreamHandler;
}  // namespace warren::node
