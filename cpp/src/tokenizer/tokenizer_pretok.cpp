#include "tokenizer/tokenizer_pretok.h"

#include <cstdint>

#include "tokenizer/unicode.h"

namespace ffnskip {

namespace {

// Code points of the text with their byte offsets (offs has one extra entry: the end).
struct CodePoints {
    std::vector<uint32_t> cp;
    std::vector<size_t> offs;
    explicit CodePoints(std::string_view s) {
        cp.reserve(s.size());
        offs.reserve(s.size() + 1);
        size_t i = 0;
        while (i < s.size()) {
            uint32_t c;
            const size_t len = unicode::decode_utf8(s.data() + i, s.size() - i, &c);
            cp.push_back(c);
            offs.push_back(i);
            i += len;
        }
        offs.push_back(s.size());
    }
};

// Character classes of one code point, computed once per position.
enum : uint8_t { kL = 1, kN = 2, kS = 4 };

uint8_t classes(uint32_t c) {
    if (c < 128) {
        // Fast path for ASCII text.
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return kL;
        if (c >= '0' && c <= '9') return kN;
        if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return kS;
        return 0;
    }
    if (c == unicode::kInvalid) return 0;
    uint8_t k = 0;
    if (unicode::is_letter(c)) k |= kL;
    if (unicode::is_number(c)) k |= kN;
    if (unicode::is_whitespace(c)) k |= kS;
    return k;
}

char lower_ascii(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return static_cast<char>(c + 32);
    // U+017F LATIN SMALL LETTER LONG S case-folds to 's' under (?i).
    if (c == 0x17F) return 's';
    return c < 128 ? static_cast<char>(c) : '\0';
}

// Length (in code points) of a contraction 's 't 're 've 'm 'll 'd at i, or 0.
size_t contraction(const std::vector<uint32_t>& cp, size_t i, bool ignore_case) {
    const size_t n = cp.size();
    if (cp[i] != '\'' || i + 1 >= n) return 0;
    auto ch = [&](size_t j) -> char {
        if (j >= n) return '\0';
        return ignore_case ? lower_ascii(cp[j]) : (cp[j] < 128 ? static_cast<char>(cp[j]) : '\0');
    };
    const char a = ch(i + 1), b = ch(i + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

class Matcher {
  public:
    Matcher(std::string_view text, const CodePoints& cps, size_t begin, size_t end)
        : text_(text), cp_(cps.cp), offs_(cps.offs), begin_(begin), end_(end) {
        cls_.reserve(end - begin);
        for (size_t i = begin; i < end; ++i) cls_.push_back(classes(cp_[i]));
    }

    void gpt2(std::vector<std::string_view>& out) {
        size_t i = begin_;
        while (i < end_) {
            const size_t j = gpt2_one(i);
            emit(out, i, j);
            i = j;
        }
    }

    void llama3(std::vector<std::string_view>& out, size_t max_digits) {
        size_t i = begin_;
        while (i < end_) {
            const size_t j = llama3_one(i, max_digits);
            emit(out, i, j);
            i = j;
        }
    }

  private:
    uint8_t cls(size_t i) const { return i < end_ ? cls_[i - begin_] : 0; }
    bool is(size_t i, uint8_t k) const { return i < end_ && (cls_[i - begin_] & k); }
    bool other(size_t i) const { return i < end_ && !(cls_[i - begin_] & (kL | kN | kS)); }
    bool is_nl(size_t i) const { return i < end_ && (cp_[i] == '\r' || cp_[i] == '\n'); }
    size_t run(size_t i, uint8_t k) const {
        while (is(i, k)) ++i;
        return i;
    }
    size_t run_other(size_t i) const {
        while (other(i)) ++i;
        return i;
    }
    void emit(std::vector<std::string_view>& out, size_t a, size_t b) const {
        out.push_back(text_.substr(offs_[a], offs_[b] - offs_[a]));
    }

    // \s+(?!\S)|\s+ at a whitespace position i.
    size_t trailing_space(size_t i) const {
        const size_t k = run(i, kS);
        if (k == end_) return k;
        // The run is followed by a non-space: give back its last char, unless that empties it.
        return k - 1 > i ? k - 1 : k;
    }

    size_t gpt2_one(size_t i) const {
        if (const size_t c = contraction(cp_, i, false); c && i + c <= end_) return i + c;
        const size_t j = (cp_[i] == ' ') ? i + 1 : i;
        if (is(j, kL)) return run(j, kL);
        if (is(j, kN)) return run(j, kN);
        if (other(j)) return run_other(j);
        return trailing_space(i);
    }

    size_t llama3_one(size_t i, size_t max_digits) const {
        if (const size_t c = contraction(cp_, i, true); c && i + c <= end_) return i + c;
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (is(i, kL)) return run(i, kL);
        if (!is_nl(i) && !is(i, kL | kN) && is(i + 1, kL)) return run(i + 1, kL);
        // \p{N}{1,max}
        if (is(i, kN)) {
            size_t j = i;
            while (j - i < max_digits && is(j, kN)) ++j;
            return j;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        const size_t j = (cp_[i] == ' ') ? i + 1 : i;
        if (other(j)) {
            size_t k = run_other(j);
            while (is_nl(k)) ++k;
            return k;
        }
        // \s*[\r\n]+ : the whitespace run up to and including its last \r or \n.
        const size_t k = run(i, kS);
        for (size_t m = k; m > i; --m) {
            if (is_nl(m - 1)) return m;
        }
        return trailing_space(i);
    }

    std::string_view text_;
    const std::vector<uint32_t>& cp_;
    const std::vector<size_t>& offs_;
    size_t begin_, end_;
    std::vector<uint8_t> cls_;
};

}  // namespace

PreTokenizer pre_tokenizer_from_name(const std::string& name, bool* known) {
    *known = true;
    if (name.empty() || name == "default" || name == "gpt2" || name == "gpt-2") {
        return PreTokenizer::Gpt2;
    }
    if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") return PreTokenizer::Llama3;
    if (name == "qwen2" || name == "deepseek-r1-qwen") return PreTokenizer::Qwen2;
    if (name == "smollm") return PreTokenizer::Smollm;
    if (name == "deepseek-llm") return PreTokenizer::DeepseekLlm;
    if (name == "deepseek-coder") return PreTokenizer::DeepseekCoder;
    *known = false;
    return PreTokenizer::Gpt2;
}

void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& out) {
    if (text.empty()) return;
    if (kind == PreTokenizer::DeepseekLlm || kind == PreTokenizer::DeepseekCoder) {
        pre_tokenize_deepseek(kind, text, out);
        return;
    }
    const CodePoints cps(text);
    const size_t n = cps.cp.size();
    switch (kind) {
        case PreTokenizer::Gpt2:
            Matcher(text, cps, 0, n).gpt2(out);
            break;
        case PreTokenizer::Llama3:
            Matcher(text, cps, 0, n).llama3(out, 3);
            break;
        case PreTokenizer::Qwen2:
            Matcher(text, cps, 0, n).llama3(out, 1);
            break;
        case PreTokenizer::Smollm: {
            // Digits are isolated first; the GPT-2 rule then runs on each stretch between them.
            size_t start = 0;
            for (size_t i = 0; i <= n; ++i) {
                if (i < n && !unicode::is_number(cps.cp[i])) continue;
                if (i > start) Matcher(text, cps, start, i).gpt2(out);
                if (i < n) out.push_back(text.substr(cps.offs[i], cps.offs[i + 1] - cps.offs[i]));
                start = i + 1;
            }
            break;
        }
        case PreTokenizer::DeepseekLlm:
        case PreTokenizer::DeepseekCoder:
            break;  // handled above
    }
}

}  // namespace ffnskip
