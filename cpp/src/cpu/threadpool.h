// A persistent pool of worker threads for the CPU backend: one set of threads for the Generator's
// lifetime, so no thread is created per op. The calling thread works too.
//
// Tasks are claimed through one atomic ticket holding (generation << 32 | next task). The caller
// waits only for tasks that were claimed to finish, never for workers to wake up: a worker that
// is descheduled (a busy desktop, an oversubscribed machine) simply claims nothing, and the
// caller runs the tasks itself instead of spinning on it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ffnskip::cpu {

class ThreadPool {
  public:
    // n_threads includes the calling thread (n_threads - 1 workers are started). Throws
    // ResourceError, with every worker already started stopped again, if a thread cannot be
    // created (thread or address-space limits).
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    // Calls fn(task, thread_index) for every task in [0, n_tasks) and returns when all are done.
    // fn must not throw (kernels don't); not re-entrant.
    void run(int n_tasks, const std::function<void(int task, int thread)>& fn);

  private:
    void worker(int index);
    // Wakes every worker with stop_ set and joins it.
    void stop_workers();
    // Claims and runs tasks of generation `gen` until none is left.
    void work(uint32_t gen, int thread);

    int n_threads_;
    std::vector<std::thread> threads_;
    std::atomic<const std::function<void(int, int)>*> fn_{nullptr};
    std::atomic<int> n_tasks_{0};
    std::atomic<uint64_t> ticket_{0};  // generation << 32 | index of the next unclaimed task
    std::atomic<int> done_{0};         // tasks of the current generation that have finished
    std::atomic<bool> stop_{false};
    // Idle workers spin briefly (a decode step issues hundreds of runs per token), then sleep.
    std::mutex mutex_;
    std::condition_variable wake_;
};

// Physical cores of this machine (logical CPUs divided by SMT siblings), at least 1.
int physical_cores();
// Logical CPUs (hardware threads) of this machine, at least 1.
int logical_cpus();
// The most threads an engine may be asked for: more than a few per CPU only adds contention,
// and each costs a stack (1000 of them exhausted a 4 GB address space, issue 16).
constexpr int kThreadsPerCpu = 4;
int max_threads();

}  // namespace ffnskip::cpu
