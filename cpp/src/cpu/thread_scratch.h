// Per-thread scratch memory for kernel files built for a wider ISA than the baseline. Such a file
// must not instantiate std::vector's member functions itself: those are weak symbols, and the
// linker may keep the copy built with AVX-512 for every other caller in the library, which then
// faults on a CPU without it (tools/check_isa_objects.sh checks). This file is built for the
// baseline ISA.
#pragma once

#include <cstddef>

namespace ffnskip::cpu {

// Scratch slots a thread may hold at once.
enum class ScratchSlot {
    kGemmActs,
    kGemmRows,
    kSparseY,  // the channel-sparse product's buffers (sparse_scratch.h)
    kSparseZ,
    kSparseZm,
    kSparseAcc,
    kSparseRows,
    kCount
};

// `bytes` of this thread's memory for `slot`, 64-byte aligned, not zeroed; valid until the
// thread's next call for the same slot.
void* thread_scratch(ScratchSlot slot, size_t bytes);

}  // namespace ffnskip::cpu
