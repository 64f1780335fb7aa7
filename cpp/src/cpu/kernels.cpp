// Run-time ISA dispatch and argument checking for the CPU kernels (x86-64: AVX2 when the CPU has
// it; AArch64: NEON, always present; scalar everywhere, also selectable for tests).
#include "cpu/kernels.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/kernels_impl.h"
#include "cpu/repack.h"
#include "env_flag.h"
#include "ffnskip/ffnskip.h"
#include "ggml_types.h"
#include "quants.h"

#if defined(FFNSKIP_X86)
#include <cpuid.h>
#endif

namespace ffnskip::cpu {

namespace {

// CPUID and XGETBV directly (clang 14's __builtin_cpu_supports does not know "f16c"): the CPU
// must have the instructions, and the OS must save the registers they use (XCR0).
#if defined(FFNSKIP_X86)
// The OS-saved register state (XCR0; only valid where CPUID says OSXSAVE).
unsigned xcr0() {
    unsigned lo = 0, hi = 0;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return lo;
}

// CPUID leaf 7's EBX (the AVX2 and AVX-512 feature bits); 0 where the leaf is missing.
unsigned leaf7_ebx() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) ? ebx : 0;
}

// CPUID leaf 7's ECX (AVX512_VNNI among others); 0 where the leaf is missing.
unsigned leaf7_ecx() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) ? ecx : 0;
}

// AVX2, FMA and F16C, with the YMM registers saved (XCR0 bits 1 and 2).
bool cpu_has_avx2() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const bool fma = ecx & (1u << 12), osxsave = ecx & (1u << 27), avx = ecx & (1u << 28),
               f16c = ecx & (1u << 29);
    if (!(fma && osxsave && avx && f16c)) return false;
    return (xcr0() & 0x6u) == 0x6u && (leaf7_ebx() & (1u << 5));
}
#endif

}  // namespace

#if defined(FFNSKIP_X86)
bool cpu_has_avx512() {
    // FFNSKIP_AVX512=0 hides AVX-512 (and so VNNI and AMX) from every kernel, as the VMs that do
    // not expose it would: speed claims are checked on the AVX2 kernels too.
    if (env_set_to_zero("FFNSKIP_AVX512")) return false;
    // F, DQ, BW and VL, with the opmask and both halves of the ZMM registers saved too.
    const unsigned f = 1u << 16, dq = 1u << 17, bw = 1u << 30, vl = 1u << 31;
    return cpu_has_avx2() && (xcr0() & 0xE6u) == 0xE6u &&
           (leaf7_ebx() & (f | dq | bw | vl)) == (f | dq | bw | vl);
}

bool cpu_has_avx512_vnni() {
    return cpu_has_avx512() && (leaf7_ecx() & (1u << 11));
}

bool cpu_has_amx_bf16() {
    static const bool ok = [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
        const bool amx_bf16 = edx & (1u << 22), amx_tile = edx & (1u << 24);
        unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
        const bool avx512_bf16 = __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5));
        if (!(cpu_has_avx512() && amx_bf16 && amx_tile && avx512_bf16)) return false;
#if defined(__linux__)
        // The tile data state is off until the process asks for it (Linux 5.16+); a kernel
        // or hypervisor that refuses leaves the kernels on AVX-512.
        constexpr long kReqXcompPerm = 0x1023, kXfeatureTileData = 18;
        if (syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureTileData) != 0) return false;
        return (xcr0() & 0x60000u) == 0x60000u;
#else
        return false;
#endif
    }();
    return ok;
}
#endif

namespace {

const KernelTable* best_table() {
#if defined(FFNSKIP_X86)
    if (cpu_has_avx2()) return &kAvx2Kernels;
#endif
#if defined(FFNSKIP_NEON)
    return &kNeonKernels;  // NEON is part of every AArch64 CPU
#endif
    return &kScalarKernels;
}

const KernelTable* table_for(const char* level) {
    if (level == nullptr || std::strcmp(level, "auto") == 0 || level[0] == '\0')
        return best_table();
    if (std::strcmp(level, "scalar") == 0) return &kScalarKernels;
#if defined(FFNSKIP_X86)
    if (std::strcmp(level, "avx2") == 0 && cpu_has_avx2()) return &kAvx2Kernels;
#endif
#if defined(FFNSKIP_NEON)
    if (std::strcmp(level, "neon") == 0) return &kNeonKernels;
#endif
    return nullptr;
}

// FFNSKIP_SIMD is read once, when the library is loaded; an unusable value falls back to auto
// (library code cannot report it, and refusing to load would be worse).
const KernelTable* initial_table() {
    const KernelTable* t = table_for(std::getenv("FFNSKIP_SIMD"));
    return t ? t : best_table();
}

std::atomic<const KernelTable*> g_table{initial_table()};

inline const KernelTable& K() {
    return *g_table.load(std::memory_order_relaxed);
}

// Grouped views (repack.h) are checked as their base type.
void check_weight_type(uint32_t type, const char* what) {
    const TypeInfo* t = type_info(base_type(type));
    if (t == nullptr || !t->weight_ok) {
        throw InvalidArgument(std::string(what) + ": unsupported weight type " + type_name(type));
    }
}

void check_cols(uint32_t type, int64_t cols, const char* what) {
    const TypeInfo* t = type_info(base_type(type));
    if (cols <= 0 || cols % t->block_size != 0) {
        throw InvalidArgument(std::string(what) + ": " + std::to_string(cols) +
                              " columns is not a positive multiple of the " + t->name +
                              " block size " + std::to_string(t->block_size));
    }
}

// Kernels without a grouped path (scalar) see one plain row at a time.
void matmul_ungrouped(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok,
                      float* y, int64_t ldy, int64_t r0, int64_t r1) {
    thread_local std::vector<uint8_t> row;
    row.resize(w.row_bytes);
    WeightView one = w;
    one.type = base_type(w.type);
    one.data = row.data();
    one.rows = 1;
    for (int64_t r = r0; r < r1; ++r) {
        ungroup_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, row.data(), w.cols);
        K().matmul(one, x, acts, n_tok, y + r, ldy, 0, 1);
    }
}

}  // namespace

ActKind act_kind(uint32_t weight_type) {
    switch (base_type(weight_type)) {
        case GGML_Q4_0:
        case GGML_Q4_1:
        case GGML_Q5_0:
        case GGML_Q5_1:
        case GGML_Q8_0:
        case GGML_Q4_K:
        case GGML_Q5_K:
        case GGML_Q6_K:
            return ActKind::kBlock32;
        default:
            return ActKind::kF32;
    }
}

int act_group_blocks(uint32_t weight_type) {
    switch (base_type(weight_type)) {
        case GGML_Q4_K:
        case GGML_Q5_K:
        case GGML_Q6_K:
            return 256 / kActBlock;
        default:
            return 1;
    }
}

size_t act_row_bytes(uint32_t weight_type, int64_t cols) {
    check_weight_type(weight_type, "act_row_bytes");
    check_cols(weight_type, cols, "act_row_bytes");
    if (act_kind(weight_type) == ActKind::kF32) return 0;
    return static_cast<size_t>(cols / kActBlock) * kActBytes32;
}

void prepare_acts(uint32_t weight_type, const float* x, int64_t cols, int64_t t0, int64_t t1,
                  uint8_t* acts) {
    const size_t stride = act_row_bytes(weight_type, cols);
    if (stride == 0) return;
    const KernelTable& k = K();
    const int group = act_group_blocks(weight_type);
    for (int64_t t = t0; t < t1; ++t) {
        k.prepare_row(x + t * cols, cols, group, acts + static_cast<size_t>(t) * stride);
    }
}

namespace {
void check_matmul(const WeightView& w, const uint8_t* acts, int64_t n_tok, int64_t r0, int64_t r1,
                  const char* what) {
    check_weight_type(w.type, what);
    check_cols(w.type, w.cols, what);
    if (r0 < 0 || r1 > w.rows || r0 > r1 || n_tok < 0) {
        throw InvalidArgument(std::string(what) + ": row range [" + std::to_string(r0) + ", " +
                              std::to_string(r1) + ") outside 0.." + std::to_string(w.rows));
    }
    if (act_kind(w.type) != ActKind::kF32 && acts == nullptr) {
        throw InvalidArgument(std::string(what) + ": " + type_name(w.type) +
                              " weights need prepared activations");
    }
}
}  // namespace

void matmul(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok, float* y,
            int64_t ldy, int64_t r0, int64_t r1) {
    check_matmul(w, acts, n_tok, r0, r1, "matmul");
    if (n_tok == 0 || r0 == r1) return;
#if defined(FFNSKIP_X86)
    const bool grouped_kernels = &K() == &kAvx2Kernels;
#elif defined(FFNSKIP_NEON)
    // The NEON kernels read grouped Q4_0 and Q4_1 rows; Q4_K is grouped only for AVX2 (repack.h).
    const bool grouped_kernels = &K() == &kNeonKernels && base_type(w.type) != GGML_Q4_K;
#else
    const bool grouped_kernels = false;
#endif
    if (is_grouped(w.type) && !grouped_kernels)
        return matmul_ungrouped(w, x, acts, n_tok, y, ldy, r0, r1);
    K().matmul(w, x, acts, n_tok, y, ldy, r0, r1);
}

void matmul_each_token(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok,
                       float* y, int64_t ldy, int64_t r0, int64_t r1) {
    check_matmul(w, acts, n_tok, r0, r1, "matmul_each_token");
    if (n_tok == 0 || r0 == r1) return;
    if (n_tok >= 2 && K().matmul_each_token != nullptr &&
        K().matmul_each_token(w, acts, n_tok, y, ldy, r0, r1))
        return;
    const size_t stride = act_row_bytes(w.type, w.cols);
    for (int64_t t = 0; t < n_tok; ++t) {
        matmul(w, x + t * w.cols, acts ? acts + static_cast<size_t>(t) * stride : nullptr, 1,
               y + t * ldy, ldy, r0, r1);
    }
}

void matvec_rows(const WeightView& w, const float* x, const uint8_t* acts, const int32_t* rows,
                 int64_t n, float* y) {
    check_weight_type(w.type, "matvec_rows");
    check_cols(w.type, w.cols, "matvec_rows");
    for (int64_t k = 0; k < n; ++k) {
        if (rows[k] < 0 || rows[k] >= w.rows) {
            throw InvalidArgument("matvec_rows: row " + std::to_string(rows[k]) + " outside 0.." +
                                  std::to_string(w.rows));
        }
    }
    if (act_kind(w.type) == ActKind::kF32) {  // float weights: their one-token kernel per row
        for (int64_t k = 0; k < n; ++k) K().matmul(w, x, acts, 1, y, 1, rows[k], rows[k] + 1);
        return;
    }
    if (acts == nullptr) {
        throw InvalidArgument(std::string("matvec_rows: ") + type_name(w.type) +
                              " weights need prepared activations");
    }
#if defined(FFNSKIP_X86)
    const bool grouped_kernels = &K() == &kAvx2Kernels;
#else
    const bool grouped_kernels = false;
#endif
    if (is_grouped(w.type) && !grouped_kernels) {
        for (int64_t k = 0; k < n; ++k) matmul_ungrouped(w, x, acts, 1, y, 1, rows[k], rows[k] + 1);
        return;
    }
    K().matvec_rows(w, acts, rows, n, y);
}

void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t k0,
                   int64_t k1) {
    if (k0 < 0 || k1 > x.units() || k0 > k1) {
        throw InvalidArgument("sparse_matvec: units [" + std::to_string(k0) + ", " +
                              std::to_string(k1) + ") are not a part of the input's " +
                              std::to_string(x.units()));
    }
    K().sparse_matvec(t, x, y, k0, k1);
}

void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n) {
    if (is_grouped(type)) throw InvalidArgument("dequantize: grouped rows are matmul-only");
    check_weight_type(type, "dequantize");
    const TypeInfo* t = type_info(type);
    if (n < 0 || n % t->block_size != 0) {
        throw InvalidArgument("dequantize: " + std::to_string(n) +
                              " elements is not a multiple of the " + t->name + " block size " +
                              std::to_string(t->block_size));
    }
    K().dequantize_row(type, src, dst, n);
}

float dot_f16_f32(const uint16_t* a, const float* b, int64_t n) {
    return K().dot_f16_f32(a, b, n);
}
void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
    K().axpy_f16(a, x, y, n);
}
void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
    K().f32_to_f16(x, y, n);
}

const char* simd_level() {
#if defined(FFNSKIP_X86)
    if (g_table.load() == &kAvx2Kernels) return "avx2";
#endif
#if defined(FFNSKIP_NEON)
    if (g_table.load() == &kNeonKernels) return "neon";
#endif
    return "scalar";
}

#if !defined(FFNSKIP_X86)
// No wider lanes off x86 (the x86 ones: kernels_sparse_avx2.cpp, kernels_gemm_quant_avx2.cpp).
int sparse_lanes() {
    return 0;
}
bool set_sparse_lanes(int) {
    return false;
}
int gemm_lanes() {
    return 0;
}
bool set_gemm_lanes(int) {
    return false;
}
bool gemm_amx() {
    return false;
}
bool set_gemm_amx(bool on) {
    return !on;
}
#endif

bool set_simd_level(const char* level) {
    const KernelTable* t = table_for(level);
    if (t == nullptr) return false;
    g_table.store(t);
    return true;
}

}  // namespace ffnskip::cpu
