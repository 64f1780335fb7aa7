// What the C++ tests share: one printed line per check, and the error measures they use.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace ffnskip::test {

// Counts failures; every check prints one line, "PASS  <what>: <detail>" or "FAIL  ...".
struct Report {
    int failures = 0;
    void line(bool ok, const std::string& what, const std::string& detail) {
        std::printf("%s  %s: %s\n", ok ? "PASS" : "FAIL", what.c_str(), detail.c_str());
        std::fflush(stdout);
        if (!ok) ++failures;
    }
};

// ||a - b|| / ||b|| over n values (NaN anywhere gives NaN, which fails every <= comparison).
inline double rel_l2(const float* a, const float* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        const double d = static_cast<double>(a[i]) - b[i];
        num += d * d;
        den += static_cast<double>(b[i]) * b[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
    return rel_l2(a.data(), b.data(), b.size());
}

inline std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

}  // namespace ffnskip::test
