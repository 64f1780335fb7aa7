// The edge between C and C++: every entry point runs its body through guarded(), which turns any
// exception into a status code and the thread's last-error message. Nothing thrown inside the
// library crosses into the caller.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>

#include "ffnskip/ffnskip_c.h"
#include "handles.h"

namespace ffnskip::capi {

// The status of the exception being handled, its message (prefixed with `fn`) stored for
// ffnskip_last_error. Call only from a catch block.
ffnskip_status fail_current(const char* fn) noexcept;

template <class F>
ffnskip_status guarded(const char* fn, F&& body) noexcept {
    try {
        body();
        return FFNSKIP_OK;
    } catch (...) {
        return fail_current(fn);
    }
}

[[noreturn]] inline void fail(ffnskip_status status, std::string message) {
    throw ApiError(status, std::move(message));
}

inline void need(const void* p, const char* arg) {
    if (p == nullptr) fail(FFNSKIP_ERR_INVALID_ARGUMENT, std::string(arg) + " is NULL");
}

// Parameter structs grow by appending fields. `min_size` is the size of the struct's first
// version (it never changes); a caller's struct_size between it and today's sizeof(T) selects
// how many leading bytes the caller's struct has.
template <class T>
void check_struct_size(size_t size, size_t min_size, const char* arg) {
    if (size < min_size || size > sizeof(T)) {
        fail(FFNSKIP_ERR_INVALID_ARGUMENT,
             std::string(arg) + "->struct_size is " + std::to_string(size) + ", expected " +
                 std::to_string(min_size) + ".." + std::to_string(sizeof(T)) +
                 " (initialise it with the matching *_params_init, passing sizeof the struct)");
    }
}

// Fills the caller's struct (struct_size bytes) from `defaults`.
template <class T>
void init_params(T* params, size_t struct_size, T defaults, size_t min_size, const char* arg) {
    need(params, arg);
    check_struct_size<T>(struct_size, min_size, arg);
    defaults.struct_size = struct_size;
    std::memcpy(static_cast<void*>(params), &defaults, struct_size);
}

// The caller's struct (NULL: defaults) over the defaults: fields the caller's version of the
// struct lacks keep their default.
template <class T>
T read_params(const T* params, T defaults, size_t min_size, const char* arg) {
    if (params == nullptr) return defaults;
    check_struct_size<T>(params->struct_size, min_size, arg);
    std::memcpy(static_cast<void*>(&defaults), params, params->struct_size);
    return defaults;
}

// Copies `value` into an output struct whose struct_size the caller set.
template <class T>
void write_struct(T* out, T value, size_t min_size, const char* arg) {
    need(out, arg);
    check_struct_size<T>(out->struct_size, min_size, arg);
    value.struct_size = out->struct_size;
    std::memcpy(static_cast<void*>(out), &value, out->struct_size);
}

// Copies `n` items to a caller's buffer of `capacity` items after reporting the count.
template <class T, class N>
void copy_out(const T* src, size_t n, T* dst, size_t capacity, N* count, const char* dst_arg) {
    *count = static_cast<N>(n);
    if (n > capacity) {
        fail(FFNSKIP_ERR_BUFFER_TOO_SMALL, std::string(dst_arg) + " has room for " +
                                               std::to_string(capacity) + ", " + std::to_string(n) +
                                               " needed");
    }
    if (n > 0) {
        need(dst, dst_arg);
        std::memcpy(dst, src, n * sizeof(T));
    }
}

}  // namespace ffnskip::capi
