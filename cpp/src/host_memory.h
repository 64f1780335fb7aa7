// How much more memory this process can expect to get, for refusing an allocation up front with
// a clear message instead of failing inside it (or being killed by the OOM killer after it).
#pragma once

#include <cstdint>
#include <string>

namespace ffnskip {

struct MemoryHeadroom {
    uint64_t bytes = UINT64_MAX;  // UINT64_MAX: no limit could be read
    std::string limit;            // what sets it, for messages
};

// The smallest of: free memory (MemAvailable + SwapFree), the room left under the cgroup v2
// memory limit (memory.max) and, with address_space, the address space left under RLIMIT_AS.
MemoryHeadroom memory_headroom(bool address_space = true);

// "23040000000 bytes (21.5 GiB)".
std::string describe_bytes(uint64_t bytes);

}  // namespace ffnskip
