// Shared by the libFuzzer targets: the invariants every accepted input must satisfy (checked
// against the input buffer itself, so ASan sees any read the reader lets past the end), and a
// small in-memory GGUF writer for fixtures that have no file in the repository.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ffnskip/ffnskip.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer/tokenizer.h"

namespace ffnskip::fuzz {

// A broken invariant is a bug even when nothing crashed: abort so that libFuzzer saves the input.
#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            std::abort();                                                                     \
        }                                                                                     \
    } while (0)

// Every byte range the reader hands out must lie inside the buffer it parsed. Reading the first
// and last byte makes ASan report the overread if the bound check above is ever wrong.
inline void check_range(const gguf::File& f, const uint8_t* p, uint64_t n) {
    if (n == 0) return;
    FUZZ_CHECK(p >= f.bytes());
    FUZZ_CHECK(static_cast<uint64_t>(p - f.bytes()) <= f.size());
    FUZZ_CHECK(n <= f.size() - static_cast<uint64_t>(p - f.bytes()));
    volatile uint8_t sink = p[0];
    sink = p[n - 1];
    (void)sink;
}

// Walks everything the parser accepted: each key through every typed getter (a wrong type must
// be a FormatError, never anything else) and each tensor's data range.
inline void check_file(const gguf::File& f) {
    FUZZ_CHECK(f.alignment() != 0 && (f.alignment() & (f.alignment() - 1)) == 0);
    // The wrong-type paths throw, which is slow under ASan: the first keys are enough to reach
    // every value type, since the fuzzer reorders and retypes them freely.
    constexpr size_t kTypedKeys = 16;
    size_t k = 0;
    for (const auto& entry : f.kv()) {
        const std::string& key = entry.first;  // C++17 lambdas cannot capture a binding
        FUZZ_CHECK(f.find(key) == &entry.second);
        if (k++ >= kTypedKeys) continue;
        auto swallow = [](auto&& fn) {
            try {
                fn();
            } catch (const FormatError&) {
            }
        };
        swallow([&] { f.get_int(key, 0); });
        swallow([&] { f.get_float(key, 0); });
        swallow([&] { f.get_bool(key, false); });
        swallow([&] { f.get_string(key, ""); });
        swallow([&] { f.get_string_array(key); });
        swallow([&] { f.get_int_array(key); });
        swallow([&] { f.get_float_array(key); });
    }
    for (const gguf::TensorInfo& t : f.tensors()) {
        FUZZ_CHECK(f.tensor(t.name) == &t);
        FUZZ_CHECK(t.n_dims >= 0 && t.n_dims <= 4 && t.n_elements > 0);
        FUZZ_CHECK(t.data != nullptr);
        check_range(f, t.data, t.nbytes);
    }
}

inline void check_weight(const gguf::File& f, const WeightView& w) {
    FUZZ_CHECK(w.rows > 0 && w.cols > 0 && w.row_bytes > 0);
    check_range(f, w.data, w.row_bytes * static_cast<uint64_t>(w.rows));
}

// The shapes backends rely on without re-checking (model.h).
inline void check_model(const Model& m) {
    const Hparams& hp = m.hparams();
    const gguf::File& f = m.file();
    FUZZ_CHECK(hp.n_layer >= 1 && hp.n_embd >= 1 && hp.n_ff >= 1 && hp.n_vocab >= 1);
    FUZZ_CHECK(hp.n_head >= 1 && hp.n_head_kv >= 1 && hp.n_head % hp.n_head_kv == 0);
    FUZZ_CHECK(hp.n_rot % 2 == 0 && hp.n_rot <= hp.head_dim);
    FUZZ_CHECK(m.tokenizer().n_vocab() <= hp.n_vocab);
    FUZZ_CHECK(static_cast<int>(m.layers.size()) == hp.n_layer);
    FUZZ_CHECK(m.tok_embd.rows == hp.n_vocab && m.tok_embd.cols == hp.n_embd);
    FUZZ_CHECK(m.output.rows == hp.n_vocab && m.output.cols == hp.n_embd);
    FUZZ_CHECK(static_cast<int>(m.output_norm.size()) == hp.n_embd);
    check_weight(f, m.tok_embd);
    check_weight(f, m.output);
    const int64_t q = static_cast<int64_t>(hp.n_head) * hp.head_dim;
    const int64_t kv = static_cast<int64_t>(hp.n_head_kv) * hp.head_dim;
    for (const LayerWeights& L : m.layers) {
        FUZZ_CHECK(L.wq.rows == q && L.wq.cols == hp.n_embd);
        FUZZ_CHECK(L.wk.rows == kv && L.wv.rows == kv && L.wo.cols == q);
        FUZZ_CHECK(L.w_gate.rows == hp.n_ff && L.w_up.rows == hp.n_ff && L.w_down.cols == hp.n_ff);
        for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
            check_weight(f, *w);
        }
    }
}

// Encodes and decodes a few fixed strings with a tokenizer built from hostile metadata: the
// vocabulary, merges and special ids were all validated, so none of this may fail.
inline void check_tokenizer(const Tokenizer& tok) {
    const int32_t n = tok.n_vocab();
    FUZZ_CHECK(n >= 1);
    FUZZ_CHECK(tok.bos_id() < n && tok.eos_id() < n);
    for (int32_t id : tok.eog_ids()) FUZZ_CHECK(id >= 0 && id < n);
    for (const char* text : {"Hello world, 123 \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac!",
                             "<s>a</s> <|im_end|>\n\n  x", "\xff\xfe\x80 bad utf8 \xe2\x82"}) {
        for (int mode = 0; mode < 4; ++mode) {
            const std::vector<int32_t> ids = tok.encode(text, mode & 1, mode & 2);
            for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < n);
            tok.decode(ids, true);
            tok.decode(ids, false);
        }
    }
    const int32_t shown = n < 64 ? n : 64;
    for (int32_t id = 0; id < shown; ++id) {
        tok.token_to_bytes(id);
        tok.token_text(id);
    }
}

// Minimal GGUF v3 writer (metadata only) for in-memory fixtures.
class GgufWriter {
  public:
    void str(const std::string& key, const std::string& v) {
        kv(key, 8);
        put_str(v);
    }
    void u32(const std::string& key, uint32_t v) {
        kv(key, 4);
        put(v);
    }
    void boolean(const std::string& key, bool v) {
        kv(key, 7);
        body_.push_back(v ? 1 : 0);
    }
    void strings(const std::string& key, const std::vector<std::string>& v) {
        array(key, 8, v.size());
        for (const std::string& s : v) put_str(s);
    }
    void i32s(const std::string& key, const std::vector<int32_t>& v) {
        array(key, 5, v.size());
        for (int32_t x : v) put(x);
    }
    void f32s(const std::string& key, const std::vector<float>& v) {
        array(key, 6, v.size());
        for (float x : v) put(x);
    }
    std::vector<uint8_t> bytes() const {
        std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
        auto put_to = [&](auto x) {
            const auto* p = reinterpret_cast<const uint8_t*>(&x);
            out.insert(out.end(), p, p + sizeof x);
        };
        put_to(uint32_t{3});
        put_to(uint64_t{0});
        put_to(n_kv_);
        out.insert(out.end(), body_.begin(), body_.end());
        return out;
    }

  private:
    template <typename T>
    void put(T x) {
        const auto* p = reinterpret_cast<const uint8_t*>(&x);
        body_.insert(body_.end(), p, p + sizeof x);
    }
    void put_str(const std::string& s) {
        put(static_cast<uint64_t>(s.size()));
        body_.insert(body_.end(), s.begin(), s.end());
    }
    void kv(const std::string& key, uint32_t type) {
        put_str(key);
        put(type);
        ++n_kv_;
    }
    void array(const std::string& key, uint32_t elem, size_t n) {
        kv(key, 9);
        put(elem);
        put(static_cast<uint64_t>(n));
    }
    std::vector<uint8_t> body_;
    uint64_t n_kv_ = 0;
};

}  // namespace ffnskip::fuzz
