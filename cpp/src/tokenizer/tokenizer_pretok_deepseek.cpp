// DeepSeek LLM / DeepSeek Coder pre-tokenizers. Their tokenizer.json files do not use one
// alternation regex: the pre-tokenizer is a Sequence of Split(behavior=Isolated) steps followed
// by ByteLevel(use_regex=false). Each step splits every piece left by the previous steps and
// never matches across a piece boundary, so the steps run one after another over a list of
// code-point ranges. Inside a piece, a step emits its leftmost matches and the gaps between them.
//
// deepseek-llm (deepseek-ai/deepseek-llm-7b-base tokenizer.json, also llama.cpp's
// LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM):
//   1. [\r\n]
//   2. \s?[A-Za-zµÀ-ÖØ-öø-ƺ ... 𞤀-𞥃]+     (kCasedLetters below)
//   3. \s?[!-/:-~！-／：-～‘-‟　-。]+       (kLlmPunct)
//   4. \s+$
//   5. [一-龥ࠀ-一가-퟿]+                      (kCjk)
//   6. \p{N}+
// deepseek-coder: [\r\n], \s?\p{L}+, \s?\p{P}+, [一-龥ࠀ-一가-퟿]+, \p{N}
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <utility>

#include "tokenizer/tokenizer_pretok.h"
#include "tokenizer/unicode.h"

namespace ffnskip {

namespace {

struct Range {
    uint32_t first, last;
};

// The explicit letter class of deepseek-llm's step 2: the cased letters (Lu/Ll/Lt) of some older
// Unicode release, with gaps (no Armenian or Georgian lowercase, no Lo/Lm). It is not a category,
// so it cannot come from the generated category tables. Several members are canonical
// singletons (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A): written as numbers, because
// NFC-normalizing editors silently rewrite the literal characters.
constexpr Range kCasedLetters[] = {
    {0x0041, 0x005A},   {0x0061, 0x007A},   {0x00B5, 0x00B5},   {0x00C0, 0x00D6},
    {0x00D8, 0x00F6},   {0x00F8, 0x01BA},   {0x01BC, 0x01BF},   {0x01C4, 0x0293},
    {0x0295, 0x02AF},   {0x0370, 0x0373},   {0x0376, 0x0377},   {0x037B, 0x037D},
    {0x037F, 0x037F},   {0x0386, 0x0386},   {0x0388, 0x038A},   {0x038C, 0x038C},
    {0x038E, 0x03A1},   {0x03A3, 0x03F5},   {0x03F7, 0x0481},   {0x048A, 0x052F},
    {0x0531, 0x0556},   {0x10A0, 0x10C5},   {0x13A0, 0x13F5},   {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA},   {0x1CBD, 0x1CBF},   {0x1D00, 0x1D2B},   {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A},   {0x1E00, 0x1F15},   {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},
    {0x2102, 0x2102},   {0x2107, 0x2107},   {0x210A, 0x2113},   {0x2115, 0x2115},
    {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},   {0x2128, 0x2128},
    {0x212A, 0x212D},   {0x212F, 0x2134},   {0x2139, 0x2139},   {0x213C, 0x213F},
    {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2C7B},
    {0x2C7E, 0x2CE4},   {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF3},   {0xA640, 0xA66D},
    {0xA680, 0xA69B},   {0xA722, 0xA76F},   {0xA771, 0xA787},   {0xA78B, 0xA78E},
    {0xAB70, 0xABBF},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},   {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A},   {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

// Step 3: ASCII punctuation ranges, curly quotes, CJK space/comma/full stop, and the fullwidth
// forms of the ASCII ranges. ":-~" also spans the ASCII letters, so step 3 re-splits the pieces
// of step 2 at their non-ASCII letters (" café" -> " caf", "é"): HF does exactly that.
constexpr Range kLlmPunct[] = {
    {0x0021, 0x002F}, {0x003A, 0x007E}, {0x2018, 0x201F},
    {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};

// [一-龥ࠀ-一가-퟿]: U+0800..U+4E00 and U+4E00..U+9FA5 overlap, so this is one range plus
// Hangul. The first range is far wider than CJK (Indic scripts, general punctuation, symbols...).
constexpr Range kCjk[] = {{0x0800, 0x9FA5}, {0xAC00, 0xD7FF}};

template <size_t N>
bool in_table(const Range (&t)[N], uint32_t c) {
    const auto* it = std::upper_bound(std::begin(t), std::end(t), c,
                                      [](uint32_t v, const Range& r) { return v < r.first; });
    return it != std::begin(t) && c <= std::prev(it)->last;
}

// Per-code-point class bits; "word" and "punct" mean steps 2 and 3 of the chosen rule.
enum : uint8_t { kSpace = 1, kNewline = 2, kWord = 4, kPunct = 8, kCjkBit = 16, kNum = 32 };

bool is_punctuation(uint32_t c) {
    switch (unicode::category(c)) {
        case unicode::Pc:
        case unicode::Pd:
        case unicode::Ps:
        case unicode::Pe:
        case unicode::Pi:
        case unicode::Pf:
        case unicode::Po:
            return true;
        default:
            return false;
    }
}

uint8_t classify(uint32_t c, bool coder) {
    // An undecodable byte (kInvalid) is outside every class: it stays in a gap piece.
    if (c == unicode::kInvalid) return 0;
    uint8_t k = 0;
    if (unicode::is_whitespace(c)) k |= kSpace;
    if (c == '\r' || c == '\n') k |= kNewline;
    if (coder ? unicode::is_letter(c) : in_table(kCasedLetters, c)) k |= kWord;
    if (coder ? is_punctuation(c) : in_table(kLlmPunct, c)) k |= kPunct;
    if (in_table(kCjk, c)) k |= kCjkBit;
    if (unicode::is_number(c)) k |= kNum;
    return k;
}

enum class Step {
    Newline,        // [\r\n]
    SpaceWord,      // \s?WORD+
    SpacePunct,     // \s?PUNCT+
    TrailingSpace,  // \s+$
    CjkRun,         // [CJK]+
    NumRun,         // \p{N}+
    NumOne,         // \p{N}
};

constexpr Step kLlmSteps[] = {Step::Newline,       Step::SpaceWord, Step::SpacePunct,
                              Step::TrailingSpace, Step::CjkRun,    Step::NumRun};
constexpr Step kCoderSteps[] = {Step::Newline, Step::SpaceWord, Step::SpacePunct, Step::CjkRun,
                                Step::NumOne};

using Piece = std::pair<size_t, size_t>;  // [first, second) in code points

class Splitter {
  public:
    explicit Splitter(std::vector<uint8_t> cls) : cls_(std::move(cls)) {}

    // Splits every piece of `in` by one step into `out`.
    void apply(Step step, const std::vector<Piece>& in, std::vector<Piece>& out) const {
        out.clear();
        for (const auto& [a, b] : in) {
            if (step == Step::TrailingSpace) {
                split_trailing_space(a, b, out);
            } else {
                split_matches(step, a, b, out);
            }
        }
    }

  private:
    bool has(size_t i, size_t end, uint8_t k) const { return i < end && (cls_[i] & k); }
    size_t run(size_t i, size_t end, uint8_t k) const {
        while (has(i, end, k)) ++i;
        return i;
    }

    // End of the step's match starting exactly at i (inside [.., end)), or i for none.
    size_t match_at(Step step, size_t i, size_t end) const {
        switch (step) {
            case Step::Newline:
                return has(i, end, kNewline) ? i + 1 : i;
            case Step::SpaceWord:
            case Step::SpacePunct: {
                const uint8_t k = step == Step::SpaceWord ? kWord : kPunct;
                // \s? is greedy: take the space when a class character follows it; otherwise
                // backtrack and require the class at i itself. (U+3000 is both \s and PUNCT;
                // either way the match is the same run.)
                if (has(i, end, kSpace) && has(i + 1, end, k)) return run(i + 1, end, k);
                return run(i, end, k);
            }
            case Step::CjkRun:
                return run(i, end, kCjkBit);
            case Step::NumRun:
                return run(i, end, kNum);
            case Step::NumOne:
                return has(i, end, kNum) ? i + 1 : i;
            case Step::TrailingSpace:
                break;  // piece-level, see split_trailing_space
        }
        return i;
    }

    void split_matches(Step step, size_t a, size_t b, std::vector<Piece>& out) const {
        size_t gap = a;
        for (size_t i = a; i < b;) {
            const size_t j = match_at(step, i, b);
            if (j == i) {
                ++i;
                continue;
            }
            if (gap < i) out.emplace_back(gap, i);
            out.emplace_back(i, j);
            gap = i = j;
        }
        if (gap < b) out.emplace_back(gap, b);
    }

    // \s+$: the leftmost match is the whole whitespace run that ends the piece. ($ would also
    // match before a '\n', but step 1 has already left every '\n' in a piece of its own.)
    // Done per piece rather than per position, so a long space run costs O(n), not O(n^2).
    void split_trailing_space(size_t a, size_t b, std::vector<Piece>& out) const {
        size_t k = b;
        while (k > a && (cls_[k - 1] & kSpace)) --k;
        if (k > a) out.emplace_back(a, k);
        if (k < b) out.emplace_back(k, b);
    }

    std::vector<uint8_t> cls_;
};

}  // namespace

void pre_tokenize_deepseek(PreTokenizer kind, std::string_view text,
                           std::vector<std::string_view>& out) {
    if (text.empty()) return;
    const bool coder = kind == PreTokenizer::DeepseekCoder;
    std::vector<size_t> offs;  // byte offset of each code point, plus the end
    std::vector<uint8_t> cls;
    offs.reserve(text.size() + 1);
    cls.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        uint32_t c;
        const size_t len = unicode::decode_utf8(text.data() + i, text.size() - i, &c);
        offs.push_back(i);
        cls.push_back(classify(c, coder));
        i += len;
    }
    offs.push_back(text.size());
    const size_t n = cls.size();

    const Splitter splitter(std::move(cls));
    std::vector<Piece> pieces{{0, n}}, next;
    next.reserve(n);
    const Step* steps = coder ? kCoderSteps : kLlmSteps;
    const size_t n_steps = coder ? std::size(kCoderSteps) : std::size(kLlmSteps);
    for (size_t s = 0; s < n_steps; ++s) {
        splitter.apply(steps[s], pieces, next);
        pieces.swap(next);
    }
    for (const auto& [a, b] : pieces) out.push_back(text.substr(offs[a], offs[b] - offs[a]));
}

}  // namespace ffnskip
