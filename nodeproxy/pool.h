// warren-node's outbound HBONE pool: common/include/warren/hbone_pool.h, dialled
// from the source pod's netns (Node is its PoolEnv).
#pragma once

#include "warren/hbone_pool.h"

namespace warren::node {
using hbone::Pool;
using hbone::PoolKey;
}  // namespace warren::node
