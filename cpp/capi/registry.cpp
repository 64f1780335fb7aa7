// Live handles and their leases. One process-wide mutex: it is held only to look a pointer up
// and flip a counter, never while the engine computes, so calls on different handles proceed in
// parallel.
#include <string>

#include "boundary.h"
#include "handles.h"

namespace ffnskip::capi {

namespace {

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::Model:
            return "ffnskip_model";
        case Kind::Context:
            return "ffnskip_context";
        case Kind::Sampler:
            return "ffnskip_sampler";
        case Kind::SkipConfig:
            return "ffnskip_skip_config";
    }
    return "handle";
}

}  // namespace

Registry& Registry::instance() {
    // Never destroyed: handles an app leaks (or frees from an atexit hook) must still find it.
    static Registry* registry = new Registry();
    return *registry;
}

void Registry::check_live(const Handle* h, Kind kind, const char* arg) const {
    need(h, arg);
    // Only the address is compared until it is known to be a live handle.
    if (live_.count(h) == 0) {
        fail(FFNSKIP_ERR_INVALID_ARGUMENT,
             std::string(arg) + " is not a live " + kind_name(kind) + " (freed, or never made)");
    }
    if (h->kind != kind) {
        fail(FFNSKIP_ERR_INVALID_ARGUMENT,
             std::string(arg) + " is a " + kind_name(h->kind) + ", not a " + kind_name(kind));
    }
}

void Registry::acquire(const Handle* h, Kind kind, bool exclusive, const char* arg) {
    std::lock_guard<std::mutex> lock(mu_);
    check_live(h, kind, arg);
    if (h->exclusive || (exclusive && h->users > 0)) {
        fail(FFNSKIP_ERR_BUSY, std::string(arg) + " is in use by another call (a " +
                                   kind_name(kind) + " is used by one thread at a time)");
    }
    if (exclusive) {
        h->exclusive = true;
    } else {
        ++h->users;
    }
}

void Registry::release(const Handle* h, bool exclusive) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (exclusive) {
        h->exclusive = false;
    } else {
        --h->users;
    }
}

std::unique_ptr<Handle> Registry::retire(Handle* h, Kind kind, const char* arg) {
    if (h == nullptr) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    check_live(h, kind, arg);
    if (h->exclusive || h->users > 0) {
        fail(FFNSKIP_ERR_BUSY,
             std::string(arg) + " is in use by another call; free it after " + "that call returns");
    }
    live_.erase(h);
    return std::unique_ptr<Handle>(h);
}

}  // namespace ffnskip::capi
