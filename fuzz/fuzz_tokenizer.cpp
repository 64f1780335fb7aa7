// Fixed real vocabularies + hostile input. The first input byte picks a tokenizer and the flags;
// the rest is (a) text to encode with and without special-token parsing and decode again, and
// (b) the same bytes read as int32 token ids, in and out of range, to decode: the result is text
// or a clean InvalidArgument.
//
// Vocabularies, loaded once in LLVMFuzzerInitialize:
//   - every GGUF path in $FFNSKIP_FUZZ_VOCABS (':'-separated; fuzz/ci.sh adds SmolLM2's file),
//     defaulting to tests/data/qwen2.5-vocab.gguf of the source tree this binary was built from;
//   - a small SentencePiece vocabulary built in memory, once with the "bpe" and once with the
//     "unigram" segmentation (no SPM file is checked in).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"

using namespace ffnskip;

namespace {

struct Vocab {
    std::vector<uint8_t> bytes;  // owned copy for in-memory vocabularies
    std::unique_ptr<gguf::File> file;
    std::unique_ptr<Tokenizer> tok;
    // Byte-level BPE: bytes whose symbol is in the vocabulary. A text made only of those must
    // survive encode -> decode exactly (a byte without a symbol is dropped, by design: SmolLM2's
    // vocabulary lacks some control bytes).
    bool byte_level = false;
    bool covered[256] = {};
};

std::vector<Vocab>& vocabs() {
    static std::vector<Vocab> v;
    return v;
}

std::vector<uint8_t> spm_vocab(const char* algorithm) {
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<int32_t> types = {2, 3, 3};
    std::vector<float> scores = {0, 0, 0};
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        tokens.push_back(buf);
        types.push_back(6);
        scores.push_back(0);
    }
    const char* pieces[] = {"\xe2\x96\x81",
                            "\xe2\x96\x81t",
                            "\xe2\x96\x81the",
                            "he",
                            "th",
                            "e",
                            "t",
                            "h",
                            "a",
                            "b",
                            "ab",
                            "\xe2\x96\x81\x61",  // "▁a"
                            "o",
                            "l",
                            "ll",
                            "llo",
                            "\xe2\x96\x81hello",
                            "\xc3\xa9",
                            "\xe6\x97\xa5",
                            "1",
                            "12",
                            "\xe2\x96\x81\xe2\x96\x81",
                            "\n"};
    float score = -1.0f;
    for (const char* p : pieces) {
        tokens.push_back(p);
        types.push_back(1);
        scores.push_back(score);
        score -= 0.5f;
    }
    tokens.push_back("<|user|>");
    types.push_back(4);
    scores.push_back(0);
    fuzz::GgufWriter w;
    w.str("tokenizer.ggml.model", "llama");
    w.str("tokenizer.ffnskip.spm_algorithm", algorithm);
    w.strings("tokenizer.ggml.tokens", tokens);
    w.i32s("tokenizer.ggml.token_type", types);
    w.f32s("tokenizer.ggml.scores", scores);
    w.u32("tokenizer.ggml.unknown_token_id", 0);
    w.u32("tokenizer.ggml.bos_token_id", 1);
    w.u32("tokenizer.ggml.eos_token_id", 2);
    w.boolean("tokenizer.ggml.add_bos_token", true);
    return w.bytes();
}

void add_file(const std::string& path) {
    Vocab v;
    v.file = gguf::File::open(path);
    v.tok = Tokenizer::from_gguf(*v.file);
    v.byte_level = v.tok->model_name() == "gpt2";
    for (int b = 0; b < 256; ++b) {
        const std::string one(1, static_cast<char>(b));
        v.covered[b] = v.byte_level && v.tok->decode(v.tok->encode(one, false, false)) == one;
    }
    std::fprintf(stderr, "fuzz_tokenizer: %s: %s, %d tokens\n", path.c_str(),
                 v.tok->model_name().c_str(), v.tok->n_vocab());
    vocabs().push_back(std::move(v));
}

void add_memory(std::vector<uint8_t> bytes, const char* name) {
    Vocab v;
    v.bytes = std::move(bytes);
    v.file = gguf::File::parse(v.bytes.data(), v.bytes.size(), name);
    v.tok = Tokenizer::from_gguf(*v.file);
    vocabs().push_back(std::move(v));
}

// Valid UTF-8 without NUL (NUL round-trips too, but keep the property simple).
bool plain_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<uint8_t>(s[i]);
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || c == 0 || i + n > s.size() || c == 0xc0 || c == 0xc1 || c > 0xf4) {
            return false;
        }
        uint32_t cp = n == 1 ? c : c & (0x7f >> n);
        for (size_t k = 1; k < n; ++k) {
            const auto b = static_cast<uint8_t>(s[i + k]);
            if ((b & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (b & 0x3f);
        }
        const uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : n == 4 ? 0x10000 : 0;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += n;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const char* env = std::getenv("FFNSKIP_FUZZ_VOCABS");
    std::string list = env && *env ? env : FFNSKIP_SOURCE_DIR "/tests/data/qwen2.5-vocab.gguf";
    size_t at = 0;
    while (at <= list.size()) {
        const size_t end = std::min(list.find(':', at), list.size());
        if (end > at) add_file(list.substr(at, end - at));
        at = end + 1;
    }
    add_memory(spm_vocab("bpe"), "<spm-bpe>");
    add_memory(spm_vocab("unigram"), "<spm-unigram>");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const uint8_t sel = data[0];
    const Vocab& v = vocabs()[sel % vocabs().size()];
    const Tokenizer& tok = *v.tok;
    const bool add_special = (sel >> 4) & 1;
    const bool parse_special = (sel >> 5) & 1;
    const bool special = (sel >> 6) & 1;
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

    const std::vector<int32_t> ids = tok.encode(text, add_special, parse_special);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.n_vocab());
    const std::string back = tok.decode(ids, special);
    for (int32_t id : ids) tok.token_to_bytes(id);
    if (v.byte_level && !add_special && !parse_special && plain_utf8(text) &&
        std::all_of(text.begin(), text.end(),
                    [&](char c) { return v.covered[static_cast<uint8_t>(c)]; })) {
        FUZZ_CHECK(back == text);
    }

    std::vector<int32_t> raw((size - 1) / 4);
    if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
    try {
        tok.decode(raw, special);
    } catch (const InvalidArgument&) {
    }
    // The same ids folded into range must always decode.
    for (int32_t& id : raw) id = static_cast<int32_t>(static_cast<uint32_t>(id) % tok.n_vocab());
    tok.decode(raw, special);
    for (int32_t id : raw) {
        tok.token_to_bytes(id);
        tok.is_eog(id);
        tok.is_control(id);
    }
    return 0;
}
