// A zero-filled byte buffer in its own anonymous mapping, backed by huge pages where the kernel
// allows them (MADV_HUGEPAGE): the channel-sparse layouts are read in short scattered runs, and
// with 4 KiB pages nearly every run of a token missed the TLB.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ffnskip::cpu {

class PageBuffer {
  public:
    PageBuffer() = default;
    explicit PageBuffer(size_t bytes);  // ResourceError when the mapping fails
    ~PageBuffer();
    PageBuffer(PageBuffer&& o) noexcept;
    PageBuffer& operator=(PageBuffer&& o) noexcept;
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;

    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    void reset();  // frees the mapping

  private:
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
    void* mapping_ = nullptr;  // what reset() unmaps (or frees)
    size_t mapped_ = 0;
};

}  // namespace ffnskip::cpu
