// Exception -> status mapping, the thread-local error message, and the version queries.
#include "boundary.h"

#include <new>
#include <string>

namespace ffnskip::capi {

namespace {

thread_local std::string t_last_error;

ffnskip_status set_error(ffnskip_status status, const char* fn, const char* what) noexcept {
    try {
        t_last_error.assign(fn);
        t_last_error.append(": ");
        t_last_error.append(what);
    } catch (...) {
        // No memory for the message: an empty one beats losing the status.
        t_last_error.clear();
    }
    return status;
}

}  // namespace

ffnskip_status fail_current(const char* fn) noexcept {
    // Most derived types first: every engine error derives from ffnskip::Error.
    try {
        throw;
    } catch (const ApiError& e) {
        return set_error(e.status, fn, e.what());
    } catch (const InvalidArgument& e) {
        return set_error(FFNSKIP_ERR_INVALID_ARGUMENT, fn, e.what());
    } catch (const IoError& e) {
        return set_error(FFNSKIP_ERR_IO, fn, e.what());
    } catch (const FormatError& e) {
        return set_error(FFNSKIP_ERR_FORMAT, fn, e.what());
    } catch (const ContextOverflow& e) {
        return set_error(FFNSKIP_ERR_CONTEXT_OVERFLOW, fn, e.what());
    } catch (const BackendUnavailable& e) {
        return set_error(FFNSKIP_ERR_BACKEND_UNAVAILABLE, fn, e.what());
    } catch (const Cancelled& e) {
        return set_error(FFNSKIP_ERR_CANCELLED, fn, e.what());
    } catch (const Error& e) {
        return set_error(FFNSKIP_ERR_RUNTIME, fn, e.what());
    } catch (const std::bad_alloc&) {
        return set_error(FFNSKIP_ERR_OUT_OF_MEMORY, fn, "out of memory");
    } catch (const std::exception& e) {
        return set_error(FFNSKIP_ERR_INTERNAL, fn, e.what());
    } catch (...) {
        return set_error(FFNSKIP_ERR_INTERNAL, fn, "unknown exception");
    }
}

}  // namespace ffnskip::capi

extern "C" {

FFNSKIP_API const char* ffnskip_version(void) {
    return FFNSKIP_VERSION_STRING;
}

FFNSKIP_API int32_t ffnskip_abi_version(void) {
    return FFNSKIP_ABI_VERSION;
}

FFNSKIP_API const char* ffnskip_status_string(ffnskip_status status) {
    switch (status) {
        case FFNSKIP_OK:
            return "FFNSKIP_OK";
        case FFNSKIP_ERR_INVALID_ARGUMENT:
            return "FFNSKIP_ERR_INVALID_ARGUMENT";
        case FFNSKIP_ERR_IO:
            return "FFNSKIP_ERR_IO";
        case FFNSKIP_ERR_FORMAT:
            return "FFNSKIP_ERR_FORMAT";
        case FFNSKIP_ERR_CONTEXT_OVERFLOW:
            return "FFNSKIP_ERR_CONTEXT_OVERFLOW";
        case FFNSKIP_ERR_BACKEND_UNAVAILABLE:
            return "FFNSKIP_ERR_BACKEND_UNAVAILABLE";
        case FFNSKIP_ERR_CANCELLED:
            return "FFNSKIP_ERR_CANCELLED";
        case FFNSKIP_ERR_BUSY:
            return "FFNSKIP_ERR_BUSY";
        case FFNSKIP_ERR_BUFFER_TOO_SMALL:
            return "FFNSKIP_ERR_BUFFER_TOO_SMALL";
        case FFNSKIP_ERR_INVALID_STATE:
            return "FFNSKIP_ERR_INVALID_STATE";
        case FFNSKIP_ERR_OUT_OF_MEMORY:
            return "FFNSKIP_ERR_OUT_OF_MEMORY";
        case FFNSKIP_ERR_RUNTIME:
            return "FFNSKIP_ERR_RUNTIME";
        case FFNSKIP_ERR_INTERNAL:
            return "FFNSKIP_ERR_INTERNAL";
    }
    return "unknown status";
}

FFNSKIP_API const char* ffnskip_last_error(void) {
    return ffnskip::capi::t_last_error.c_str();
}

}  // extern "C"
