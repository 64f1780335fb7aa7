#include "cpu/page_buffer.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "ffnskip/ffnskip.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define FFNSKIP_HAVE_MMAP 1
#else
#include <cstdlib>
#endif

namespace ffnskip::cpu {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}

PageBuffer::PageBuffer(size_t bytes) {
    if (bytes == 0) return;
#ifdef FFNSKIP_HAVE_MMAP
    // Mapped with a huge page of slack, so the buffer can start on a huge-page boundary.
    const size_t len = bytes + kHugePage;
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        throw ResourceError("cannot map " + std::to_string(bytes) +
                            " bytes for a channel-sparse weight layout: " + std::strerror(errno));
    }
    auto* base = static_cast<uint8_t*>(p);
    const auto addr = reinterpret_cast<uintptr_t>(base);
    const size_t lead = (kHugePage - addr % kHugePage) % kHugePage;
#ifdef MADV_HUGEPAGE
    // Advice only: without huge pages the buffer works the same, slower.
    ::madvise(base + lead, bytes, MADV_HUGEPAGE);
#endif
    data_ = base + lead;
    size_ = bytes;
    mapping_ = p;
    mapped_ = len;
#else
    data_ = static_cast<uint8_t*>(std::calloc(bytes, 1));
    if (data_ == nullptr) throw ResourceError("cannot allocate a channel-sparse weight layout");
    size_ = bytes;
    mapping_ = data_;
#endif
}

PageBuffer::~PageBuffer() {
    reset();
}

PageBuffer::PageBuffer(PageBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      mapping_(std::exchange(o.mapping_, nullptr)),
      mapped_(std::exchange(o.mapped_, 0)) {}

PageBuffer& PageBuffer::operator=(PageBuffer&& o) noexcept {
    if (this != &o) {
        reset();
        data_ = std::exchange(o.data_, nullptr);
        size_ = std::exchange(o.size_, 0);
        mapping_ = std::exchange(o.mapping_, nullptr);
        mapped_ = std::exchange(o.mapped_, 0);
    }
    return *this;
}

void PageBuffer::reset() {
    if (mapping_ == nullptr) return;
#ifdef FFNSKIP_HAVE_MMAP
    ::munmap(mapping_, mapped_);
#else
    std::free(mapping_);
#endif
    data_ = nullptr;
    size_ = 0;
    mapping_ = nullptr;
    mapped_ = 0;
}

}  // namespace ffnskip::cpu
