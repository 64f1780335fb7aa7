#include "mmap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ffnskip/ffnskip.h"

namespace ffnskip {

namespace {

[[noreturn]] void io_fail(const std::string& path, const char* what, int err) {
    throw IoError("cannot " + std::string(what) + " '" + path + "': " + std::strerror(err));
}

// Closes the descriptor on every path out of the constructor; the mapping outlives it.
struct FdGuard {
    int fd;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (fd.fd < 0) io_fail(path, "open", errno);
    struct stat st{};
    if (::fstat(fd.fd, &st) != 0) io_fail(path, "stat", errno);
    // open() succeeds on a directory, so it has to be refused here rather than at read time.
    if (S_ISDIR(st.st_mode)) io_fail(path, "open", EISDIR);
    if (!S_ISREG(st.st_mode)) {
        throw IoError("cannot map '" + path + "': not a regular file");
    }
    if (st.st_size == 0) return;  // mmap rejects length 0; the parser reports "empty file"
    if (static_cast<unsigned long long>(st.st_size) > SIZE_MAX) {
        throw IoError("cannot map '" + path + "': file too large for the address space");
    }
    const size_t size = static_cast<size_t>(st.st_size);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
    if (p == MAP_FAILED) io_fail(path, "mmap", errno);
    data_ = static_cast<const uint8_t*>(p);
    size_ = size;
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace ffnskip
