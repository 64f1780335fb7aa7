// Whole-model forward through the real loader (model.*, gguf.*) and the CPU backend, against
// logits computed by the independent numpy reference (tests/reference.py) on another machine:
// tests/cpp/make_forward_cases.py writes MODEL.gguf and MODEL.ref. Prints one line per model and
// SIMD level; exits 1 if any fails.
//
//     forward_test MODEL.gguf MODEL.ref [MODEL.gguf MODEL.ref ...]
//
// Each model runs at the level "auto" picks and at "scalar": the first n_prompt tokens as one
// batch (the prompt matmuls), the rest one token at a time (the decode matmuls). Tolerance, as in
// tests/test_forward.py: relative L2 error of every position's logits <= 1e-2 and the same top-1
// token.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/kernels.h"
#include "engine.h"
#include "ffnskip/ffnskip.h"

using namespace ffnskip;

namespace {

constexpr double kRelTol = 1e-2;
constexpr char kMagic[8] = {'F', 'F', 'N', 'S', 'R', 'E', 'F', '1'};

// MODEL.ref: magic, int32 n_tok, n_prompt, n_vocab, int32 tokens[n_tok],
// float32 logits[n_tok][n_vocab] (little-endian, as both machines are).
struct Reference {
    int32_t n_tok = 0, n_prompt = 0, n_vocab = 0;
    std::vector<int32_t> tokens;
    std::vector<float> logits;
};

Reference read_reference(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    char magic[8];
    Reference r;
    if (!f.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0)
        throw Error(path + ": not a reference file");
    f.read(reinterpret_cast<char*>(&r.n_tok), 4);
    f.read(reinterpret_cast<char*>(&r.n_prompt), 4);
    f.read(reinterpret_cast<char*>(&r.n_vocab), 4);
    if (!f || r.n_tok <= 0 || r.n_prompt <= 0 || r.n_prompt > r.n_tok || r.n_vocab <= 0 ||
        r.n_vocab > (1 << 20) || r.n_tok > 4096)
        throw Error(path + ": bad header");
    r.tokens.resize(r.n_tok);
    r.logits.resize(static_cast<size_t>(r.n_tok) * r.n_vocab);
    f.read(reinterpret_cast<char*>(r.tokens.data()), 4 * r.tokens.size());
    f.read(reinterpret_cast<char*>(r.logits.data()), 4 * r.logits.size());
    if (!f) throw Error(path + ": truncated");
    return r;
}

size_t argmax(const float* v, int n) {
    size_t best = 0;
    for (int i = 1; i < n; ++i)
        if (v[i] > v[best]) best = static_cast<size_t>(i);
    return best;
}

void check_model(const std::string& model, const Reference& ref, const char* level,
                 test::Report& rep) {
    cpu::set_simd_level(level);
    const std::string name =
        "forward " + model.substr(model.find_last_of('/') + 1) + " [" + cpu::simd_level() + "]";
    // The level is set before loading: the loader groups Q4_0/Q4_1 rows where the level's kernels
    // read them grouped.
    Engine eng(model, "cpu", ref.n_tok, 2);
    if (eng.model().hparams().n_vocab != ref.n_vocab) {
        rep.line(false, name, "vocabulary size differs from the reference");
        return;
    }
    const int nv = ref.n_vocab;
    std::vector<float> got(ref.logits.size());
    eng.eval(ref.tokens.data(), ref.n_prompt, true, got.data());
    for (int t = ref.n_prompt; t < ref.n_tok; ++t)
        eng.eval(&ref.tokens[t], 1, false, &got[static_cast<size_t>(t) * nv]);
    double worst = 0;
    bool same_top = true;
    for (int t = 0; t < ref.n_tok; ++t) {
        const float* g = &got[static_cast<size_t>(t) * nv];
        const float* w = &ref.logits[static_cast<size_t>(t) * nv];
        const double err = test::rel_l2(g, w, nv);
        worst = std::isnan(err) ? err : std::max(worst, err);
        same_top = same_top && argmax(g, nv) == argmax(w, nv);
    }
    rep.line(worst <= kRelTol && same_top, name,
             std::to_string(ref.n_tok) + " positions (" + std::to_string(ref.n_prompt) +
                 " batched + " + std::to_string(ref.n_tok - ref.n_prompt) +
                 " decoded), max rel err " + test::fmt("%.2e", worst) + " <= " +
                 test::fmt("%.0e", kRelTol) + ", top-1 " + (same_top ? "equal" : "DIFFERS"));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3 || argc % 2 != 1) {
        std::fprintf(stderr, "usage: %s MODEL.gguf MODEL.ref [MODEL.gguf MODEL.ref ...]\n",
                     argv[0]);
        return 2;
    }
    const std::string best = cpu::simd_level();
    test::Report rep;
    for (int i = 1; i + 1 < argc; i += 2) {
        try {
            const Reference ref = read_reference(argv[i + 1]);
            check_model(argv[i], ref, best.c_str(), rep);
            if (best != "scalar") check_model(argv[i], ref, "scalar", rep);
        } catch (const Error& e) {
            rep.line(false, std::string("forward ") + argv[i], e.what());
        }
    }
    cpu::set_simd_level("auto");
    std::printf("%s: %d failed\n", rep.failures ? "FAILED" : "ALL PASSED", rep.failures);
    return rep.failures ? 1 : 0;
}
