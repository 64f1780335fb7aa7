#include "env_flag.h"

#include <cstdlib>
#include <cstring>

namespace ffnskip {

bool env_set_to_zero(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && std::strcmp(v, "0") == 0;
}

}  // namespace ffnskip
