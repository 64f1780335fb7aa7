#include "cpu/threadpool.h"

#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "ffnskip/ffnskip.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FFNSKIP_PAUSE() _mm_pause()
#else
#define FFNSKIP_PAUSE() ((void)0)
#endif

namespace ffnskip::cpu {

namespace {
// About 100 microseconds of spinning before a worker sleeps: long enough to bridge the gap
// between the ops of one token, short enough not to burn a core while Python samples.
constexpr int kSpinIterations = 20000;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    const int workers = n_threads_ - 1;
    threads_.reserve(static_cast<size_t>(workers));
    try {
        for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
    } catch (const std::exception& e) {
        // The destructor does not run for a constructor that throws: without this the members
        // would be destroyed under the running workers (the condition variable's destructor
        // waits for its sleepers forever).
        const size_t started = threads_.size();
        stop_workers();
        throw ResourceError("cannot start worker thread " + std::to_string(started + 1) + " of " +
                            std::to_string(workers) + " (" + e.what() +
                            "): ask for fewer threads or raise the process's limits");
    }
}

ThreadPool::~ThreadPool() {
    stop_workers();
}

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        ticket_.fetch_add(uint64_t{1} << 32);
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
}

void ThreadPool::work(uint32_t gen, int thread) {
    uint64_t t = ticket_.load(std::memory_order_acquire);
    for (;;) {
        // A ticket of another generation, one past the last task, or a closed ticket (run() is
        // republishing) means there is nothing to claim.
        if (static_cast<uint32_t>(t >> 32) != gen) return;
        const uint32_t task = static_cast<uint32_t>(t);
        // Acquire: if this reads the next run's count, the closing of the ticket that run()
        // stored before it is visible too, and the CAS below fails.
        if (task >= static_cast<uint32_t>(n_tasks_.load(std::memory_order_acquire))) return;
        if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
            continue;
        }
        // The claim succeeded within `gen`, so run() is still waiting for this task and fn_
        // is the one published for it.
        (*fn_.load(std::memory_order_acquire))(static_cast<int>(task), thread);
        done_.fetch_add(1, std::memory_order_acq_rel);
        t = ticket_.load(std::memory_order_acquire);
    }
}

void ThreadPool::run(int n_tasks, const std::function<void(int, int)>& fn) {
    if (n_tasks <= 0) return;
    if (n_threads_ == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; ++t) fn(t, 0);
        return;
    }
    // Close the previous generation's ticket before touching fn_/n_tasks_/done_: a worker that
    // loaded that ticket just before it ran out of tasks must not claim a task of this run.
    const uint64_t prev = ticket_.load(std::memory_order_relaxed);
    ticket_.store(prev | 0xffffffffu, std::memory_order_seq_cst);
    fn_.store(&fn, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    n_tasks_.store(n_tasks, std::memory_order_release);
    uint32_t gen;
    {
        // The lock orders the publication with workers that are about to sleep.
        std::lock_guard<std::mutex> lock(mutex_);
        gen = static_cast<uint32_t>(prev >> 32) + 1;
        ticket_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
    }
    wake_.notify_all();
    work(gen, 0);
    // Only tasks already claimed by a worker can be outstanding here.
    for (int spins = 0; done_.load(std::memory_order_acquire) != n_tasks; ++spins) {
        if (spins < 4096) {
            FFNSKIP_PAUSE();
        } else {
            std::this_thread::yield();  // the claimer was descheduled: let it run
        }
    }
}

void ThreadPool::worker(int index) {
    uint32_t seen = 0;
    auto generation = [this] {
        return static_cast<uint32_t>(ticket_.load(std::memory_order_acquire) >> 32);
    };
    for (;;) {
        int spins = 0;
        while (generation() == seen && spins < kSpinIterations) {
            FFNSKIP_PAUSE();
            ++spins;
        }
        if (generation() == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return generation() != seen; });
        }
        if (stop_.load()) return;
        seen = generation();
        work(seen, index);
    }
}

int logical_cpus() {
    const int n = static_cast<int>(std::thread::hardware_concurrency());
    return n > 0 ? n : 1;
}

int max_threads() {
    return kThreadsPerCpu * logical_cpus();
}

int physical_cores() {
    // Count distinct (physical id, core id) pairs; fall back to hardware_concurrency.
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::set<std::pair<std::string, std::string>> cores;
    std::string line, phys = "0";
    while (std::getline(cpuinfo, line)) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon);
        while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
        const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
        if (key == "physical id") phys = value;
        if (key == "core id") cores.emplace(phys, value);
    }
    int n = static_cast<int>(cores.size());
    const int logical = static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0 || (logical > 0 && n > logical)) n = logical;
    return n > 0 ? n : 1;
}

}  // namespace ffnskip::cpu
