// Measures this machine's memory read bandwidth with the given number of threads, so benchmarks
// can state decode speed as a fraction of the bandwidth floor measured in the same run.
#pragma once

#include <cstddef>

namespace ffnskip::cpu {

// Best of `repeats` passes reading a buffer of `bytes` (far larger than the caches), in bytes/s.
double measure_read_bandwidth(int n_threads, size_t bytes, int repeats);

}  // namespace ffnskip::cpu
