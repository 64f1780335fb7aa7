#include "mmap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "ffnskip/ffnskip.h"

namespace ffnskip {

namespace {

[[noreturn]] void io_fail(const std::string& path, const char* what, int err) {
    throw IoError("cannot " + std::string(what) + " '" + path + "': " + std::strerror(err));
}

const char* kind_of(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a file";
}

void require_regular(const std::string& path, const struct stat& st) {
    if (S_ISDIR(st.st_mode)) io_fail(path, "open", EISDIR);
    if (!S_ISREG(st.st_mode)) {
        throw IoError("cannot open '" + path + "': not a regular file (" + kind_of(st.st_mode) +
                      ")");
    }
}

// Closes the descriptor on every path out of the constructor unless released.
struct FdGuard {
    int fd;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
    int release() { return std::exchange(fd, -1); }
};

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    struct stat st{};
    // Checked before open(): opening a FIFO blocks until a writer appears, a device may do
    // anything.
    if (::stat(path.c_str(), &st) != 0) io_fail(path, "open", errno);
    require_regular(path, st);
    // O_NONBLOCK: if the path became a FIFO after the stat, open() returns at once and the
    // fstat below refuses it. Reads of a regular file ignore the flag.
    FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
    if (fd.fd < 0) io_fail(path, "open", errno);
    if (::fstat(fd.fd, &st) != 0) io_fail(path, "stat", errno);
    require_regular(path, st);
    if (st.st_size > 0) {  // mmap rejects length 0; the parser reports "empty file"
        if (static_cast<unsigned long long>(st.st_size) > SIZE_MAX) {
            throw IoError("cannot map '" + path + "': file too large for the address space");
        }
        const size_t size = static_cast<size_t>(st.st_size);
        void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
        if (p == MAP_FAILED) io_fail(path, "mmap", errno);
        data_ = static_cast<const uint8_t*>(p);
        size_ = size;
    }
    fd_ = fd.release();
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
}

void MappedFile::detach(size_t offset, size_t n) {
    if (n == 0 || offset >= size_) return;
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    const size_t begin = offset / page * page;
    const size_t end = (offset + std::min(n, size_ - offset) + page - 1) / page * page;
    // Whole pages are swapped, so that bytes of neighbouring ranges that share a page survive;
    // only the gaps between earlier detached ranges are swapped now.
    size_t at = begin;
    for (const auto& [done_begin, done_end] : detached_) {
        if (done_end <= at) continue;
        if (done_begin >= end) break;
        if (done_begin > at) detach_pages(at, done_begin);
        at = std::max(at, done_end);
    }
    if (at < end) detach_pages(at, end);
    detached_.emplace_back(begin, end);
    std::sort(detached_.begin(), detached_.end());
    std::vector<std::pair<size_t, size_t>> merged;
    for (const auto& r : detached_) {
        if (!merged.empty() && r.first <= merged.back().second) {
            merged.back().second = std::max(merged.back().second, r.second);
        } else {
            merged.push_back(r);
        }
    }
    detached_ = std::move(merged);
}

void MappedFile::detach_pages(size_t begin, size_t end_page) {
    const size_t len = end_page - begin;
    // The last page of the file may be partial: its tail past the end stays zero, as mapped.
    const size_t end = std::min(end_page, size_);
    uint8_t* at = const_cast<uint8_t*>(data_) + begin;
    // MAP_FIXED swaps the file's pages in this range for zeroed anonymous ones in one step,
    // and pread() then fills them from the file (pread reports a short file instead of
    // faulting).
    void* p =
        ::mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) {
        throw ResourceError("cannot copy " + std::to_string(len) + " bytes of '" + path_ +
                            "' into memory: " + std::strerror(errno));
    }
    for (size_t done = begin; done < end;) {
        const ssize_t got = ::pread(fd_, at + (done - begin), end - done, static_cast<off_t>(done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) io_fail(path_, "read", errno);
        if (got == 0) {
            throw IoError("'" + path_ + "' changed while it was being loaded: it is now shorter (" +
                          std::to_string(done) + " bytes) than when it was opened (" +
                          std::to_string(size_) + " bytes)");
        }
        done += static_cast<size_t>(got);
    }
    ::mprotect(at, len, PROT_READ);
}

}  // namespace ffnskip
