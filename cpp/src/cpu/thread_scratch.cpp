#include "cpu/thread_scratch.h"

#include <cstdint>
#include <vector>

namespace ffnskip::cpu {

void* thread_scratch(ScratchSlot slot, size_t bytes) {
    constexpr size_t kAlign = 64;
    thread_local std::vector<uint8_t> buffers[static_cast<int>(ScratchSlot::kCount)];
    std::vector<uint8_t>& b = buffers[static_cast<int>(slot)];
    if (b.size() < bytes + kAlign) b.resize(bytes + kAlign);
    const auto at = reinterpret_cast<uintptr_t>(b.data());
    return b.data() + (kAlign - at % kAlign) % kAlign;
}

}  // namespace ffnskip::cpu
