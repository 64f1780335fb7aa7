// A persistent pool of worker threads for the CPU backend: one set of threads for the Generator's
// lifetime, so no thread is created per op. The calling thread works too. Tasks of a run() are
// claimed from an atomic counter, which balances uneven work without a scheduler.
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
    // n_threads includes the calling thread (n_threads - 1 workers are started).
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
    void work(int thread);

    int n_threads_;
    std::vector<std::thread> threads_;
    const std::function<void(int, int)>* fn_ = nullptr;
    int n_tasks_ = 0;
    std::atomic<int> next_task_{0};
    std::atomic<int> busy_workers_{0};
    std::atomic<uint64_t> generation_{0};
    std::atomic<bool> stop_{false};
    // Idle workers spin briefly (a decode step issues hundreds of runs per token), then sleep.
    std::mutex mutex_;
    std::condition_variable wake_;
};

// Physical cores of this machine (logical CPUs divided by SMT siblings), at least 1.
int physical_cores();

}  // namespace ffnskip::cpu
