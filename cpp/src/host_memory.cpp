#include "host_memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace ffnskip {

namespace {

void lower(MemoryHeadroom& h, uint64_t bytes, const char* limit) {
    if (bytes < h.bytes) {
        h.bytes = bytes;
        h.limit = limit;
    }
}

// A "Key:   123 kB" line of /proc/meminfo, in bytes; false if absent.
bool meminfo(const std::string& key, uint64_t& bytes) {
    std::ifstream in("/proc/meminfo");
    std::string name;
    uint64_t kib = 0;
    std::string unit;
    while (in >> name >> kib) {
        std::getline(in, unit);
        if (name == key + ":") {
            bytes = kib * 1024;
            return true;
        }
    }
    return false;
}

uint64_t address_space_used() {
    std::ifstream in("/proc/self/statm");
    uint64_t pages = 0;
    in >> pages;
    return pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

// A number from a cgroup v2 file; false for "max" or when unreadable.
bool cgroup_value(const std::string& path, uint64_t& value) {
    std::ifstream in(path);
    std::string text;
    if (!(in >> text) || text == "max") return false;
    std::istringstream num(text);
    return static_cast<bool>(num >> value);
}

}  // namespace

MemoryHeadroom memory_headroom(bool address_space) {
    MemoryHeadroom h;
    uint64_t available = 0, swap = 0;
    if (meminfo("MemAvailable", available)) {
        meminfo("SwapFree", swap);
        lower(h, available + swap, "the memory available (MemAvailable + SwapFree)");
    }
    struct rlimit as{};
    if (address_space && ::getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
        const uint64_t used = address_space_used();
        const uint64_t cap = static_cast<uint64_t>(as.rlim_cur);
        lower(h, cap > used ? cap - used : 0,
              "the address space left under the process's address-space limit (RLIMIT_AS)");
    }
    // The unified hierarchy's entry is "0::<path>".
    std::ifstream groups("/proc/self/cgroup");
    std::string line;
    while (std::getline(groups, line)) {
        if (line.rfind("0::", 0) != 0) continue;
        const std::string dir = "/sys/fs/cgroup" + line.substr(3);
        uint64_t max = 0, current = 0;
        if (cgroup_value(dir + "/memory.max", max) &&
            cgroup_value(dir + "/memory.current", current)) {
            lower(h, max > current ? max - current : 0,
                  "the room left under the cgroup memory limit");
        }
    }
    return h;
}

std::string describe_bytes(uint64_t bytes) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " bytes (%.1f GiB)", static_cast<double>(bytes) / (1 << 30));
    return std::to_string(bytes) + buf;
}

}  // namespace ffnskip
