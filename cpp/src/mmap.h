// Read-only memory mapping of a whole file; unmapped when destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ffnskip {

class MappedFile {
  public:
    // Throws IoError naming the path and cause (missing, a directory, not a regular file,
    // unreadable; an empty file maps fine). Anything but a regular file is refused before it is
    // opened: open() of a FIFO would wait for a writer forever.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

    // Replaces the pages holding bytes [offset, offset + n) by anonymous memory with the same
    // content, read from the file. Reads of those bytes then no longer depend on the file: once
    // it is truncated or rewritten under the process (`cp new.gguf model.gguf`), a read of a
    // mapped page past its new end raises SIGBUS, which kills the process. Whole pages are
    // replaced; the bytes seen at data() do not change. Pages detached by an earlier call are
    // left alone: swapping them again would show zeros to a thread reading them meanwhile.
    // Call it before other threads read the range's not-yet-detached pages. IoError if the file
    // has shrunk since it was mapped, ResourceError without memory.
    void detach(size_t offset, size_t n);

  private:
    std::string path_;
    int fd_ = -1;  // kept open for detach()
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    // Page ranges [begin, end) already detached, sorted and disjoint.
    std::vector<std::pair<size_t, size_t>> detached_;
    void detach_pages(size_t begin, size_t end);
};

}  // namespace ffnskip
