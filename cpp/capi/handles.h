// The objects behind the C API's opaque handles, and the registry that knows which handles are
// alive and which call is using each one. Every entry point leases its handles from the
// registry, so a NULL, freed or foreign pointer is reported instead of dereferenced, and a
// handle used by two threads at once (or freed while in use) answers FFNSKIP_ERR_BUSY.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine.h"
#include "ffnskip/ffnskip.h"
#include "ffnskip/ffnskip_c.h"
#include "model.h"
#include "sampler.h"

namespace ffnskip::capi {

// A failure the C layer detects itself (NULL argument, busy handle, short buffer); the
// engine's own exceptions are mapped by type in boundary.cpp.
struct ApiError : std::exception {
    ApiError(ffnskip_status s, std::string m) : status(s), message(std::move(m)) {}
    const char* what() const noexcept override { return message.c_str(); }
    ffnskip_status status;
    std::string message;
};

enum class Kind { Model, Context, Sampler, SkipConfig };

// Common part of every handle. users/exclusive are guarded by the registry's mutex; they are
// mutable because read-only calls (which take `const ffnskip_model*`) count as users too.
struct Handle {
    explicit Handle(Kind k) : kind(k) {}
    virtual ~Handle() = default;
    const Kind kind;
    mutable int users = 0;           // calls sharing the handle (models)
    mutable bool exclusive = false;  // one call owns it (contexts, samplers, skip configs)
};

}  // namespace ffnskip::capi

struct ffnskip_model : ffnskip::capi::Handle {
    static constexpr ffnskip::capi::Kind kKind = ffnskip::capi::Kind::Model;
    ffnskip_model() : Handle(kKind) {}
    std::shared_ptr<ffnskip::Model> model;
};

struct ffnskip_context : ffnskip::capi::Handle {
    static constexpr ffnskip::capi::Kind kKind = ffnskip::capi::Kind::Context;
    ffnskip_context() : Handle(kKind) {}
    std::unique_ptr<ffnskip::Engine> engine;
    // Logits of the last evaluated token; valid only while has_logits.
    std::vector<float> logits;
    bool has_logits = false;
    // Set by ffnskip_context_cancel (any thread), cleared when a call starts. The engine has
    // its own flag for stopping inside a forward pass; this one stops ffnskip_generate's loop.
    std::atomic<bool> cancel{false};

    // Every computing call starts here: a cancel issued before it does not stop it.
    void begin_call() {
        cancel.store(false);
        engine->clear_cancel();
    }
};

struct ffnskip_sampler : ffnskip::capi::Handle {
    static constexpr ffnskip::capi::Kind kKind = ffnskip::capi::Kind::Sampler;
    ffnskip_sampler() : Handle(kKind) {}
    ffnskip::Sampler sampler;
    ffnskip::SamplingParams params;
    int32_t repeat_last_n = 64;
};

struct ffnskip_skip_config : ffnskip::capi::Handle {
    static constexpr ffnskip::capi::Kind kKind = ffnskip::capi::Kind::SkipConfig;
    ffnskip_skip_config() : Handle(kKind) {}
    ffnskip::SkipConfig cfg;
};

namespace ffnskip::capi {

class Registry {
  public:
    static Registry& instance();

    // Takes ownership of a new handle and returns the pointer handed to the app.
    template <class H>
    H* adopt(std::unique_ptr<H> h) {
        std::lock_guard<std::mutex> lock(mu_);
        live_.insert(h.get());
        return h.release();
    }
    // Throws INVALID_ARGUMENT unless h is a live handle of `kind` (arg names it in the
    // message), BUSY if it is owned by another call (or, for exclusive use, shared by one).
    void acquire(const Handle* h, Kind kind, bool exclusive, const char* arg);
    void release(const Handle* h, bool exclusive) noexcept;
    // Unregisters h (null: nothing) unless a call uses it (BUSY) and hands it back for deletion
    // outside the lock.
    std::unique_ptr<Handle> retire(Handle* h, Kind kind, const char* arg);
    // Runs f(h) under the registry lock on a live handle, whatever call is using it.
    template <class H, class F>
    void with_live(H* h, const char* arg, F&& f) {
        std::lock_guard<std::mutex> lock(mu_);
        check_live(h, H::kKind, arg);
        f(*h);
    }

  private:
    void check_live(const Handle* h, Kind kind, const char* arg) const;
    std::mutex mu_;
    std::unordered_set<const Handle*> live_;
};

enum class Access { Shared, Exclusive };

// The right to use one handle for the duration of a call.
template <class H>
class Lease {
  public:
    Lease(H* h, const char* arg, Access access) : h_(h), exclusive_(access == Access::Exclusive) {
        Registry::instance().acquire(h, H::kKind, exclusive_, arg);
    }
    ~Lease() { Registry::instance().release(h_, exclusive_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    H& operator*() const { return *h_; }
    H* operator->() const { return h_; }

  private:
    H* h_;
    bool exclusive_;
};

// Frees a handle of type H: unregistered first, so no other call can reach it afterwards.
template <class H>
void free_handle(H* h, const char* arg) {
    std::unique_ptr<Handle> owned = Registry::instance().retire(h, H::kKind, arg);
}

}  // namespace ffnskip::capi
