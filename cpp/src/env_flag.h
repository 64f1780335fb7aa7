// Environment switches that turn a default off for comparisons (FFNSKIP_REPACK, FFNSKIP_AMX,
// FFNSKIP_AVX512, FFNSKIP_CUDA_GRAPHS). Defined in a file built for the baseline ISA: an inline
// function here would be a weak symbol, and the copy compiled into an AVX2 kernel file could serve
// every caller.
#pragma once

namespace ffnskip {

// Whether environment variable `name` is set to "0".
bool env_set_to_zero(const char* name);

}  // namespace ffnskip
