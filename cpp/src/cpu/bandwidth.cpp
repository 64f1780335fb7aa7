#include "cpu/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/threadpool.h"

namespace ffnskip::cpu {

double measure_read_bandwidth(int n_threads, size_t bytes, int repeats) {
    const size_t n = std::max<size_t>(bytes / sizeof(uint64_t), 1 << 20);
    std::vector<uint64_t> buf(n);
    for (size_t i = 0; i < n; ++i) buf[i] = i * 0x9e3779b97f4a7c15ull;  // touch every page
    ThreadPool pool(n_threads);
    std::vector<uint64_t> sums(static_cast<size_t>(pool.size()) * 8, 0);  // padded per thread
    double best = 0;
    for (int r = 0; r < std::max(1, repeats); ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const size_t per = (n + pool.size() - 1) / pool.size();
        pool.run(pool.size(), [&](int task, int) {
            const size_t a = std::min(n, static_cast<size_t>(task) * per);
            const size_t b = std::min(n, a + per);
            // Four independent accumulators so the loop is bound by loads, not by the add chain.
            uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            size_t i = a;
            for (; i + 4 <= b; i += 4) {
                s0 += buf[i];
                s1 += buf[i + 1];
                s2 += buf[i + 2];
                s3 += buf[i + 3];
            }
            for (; i < b; ++i) s0 += buf[i];
            sums[static_cast<size_t>(task) * 8] += s0 + s1 + s2 + s3;
        });
        const double dt =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / dt);
    }
    // Keep the sums observable so the reads cannot be optimised away.
    volatile uint64_t sink = 0;
    for (uint64_t s : sums) sink = sink + s;
    (void)sink;
    return best;
}

}  // namespace ffnskip::cpu
