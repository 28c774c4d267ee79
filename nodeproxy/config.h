// The configuration schema lives in common/ (the controller validates and
// produces the same shape); the node proxy's code includes it from here.
#pragma once

#include "warren/config.h"
