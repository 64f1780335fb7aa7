// Byte-level BPE (GPT-2 family): pre-tokenize, map bytes to the printable alphabet, then apply
// merges lowest rank first. A word is a linked list of symbols with a heap of candidate pairs,
// so each merge costs O(log n) instead of a rescan of the word.
#include <algorithm>
#include <array>
#include <cstdint>
#include <unordered_map>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace ffnskip {

namespace {

constexpr size_t kMaxCachedWord = 64;

struct MergeInfo {
    int32_t rank;
    int32_t result;
};

struct Candidate {
    int32_t rank;
    int32_t left;  // symbol index of the pair's left side
    int32_t left_id, right_id;
    // std heaps are max-heaps: the "largest" candidate is the lowest rank, then leftmost.
    bool operator<(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : left > o.left;
    }
};

class BpeTokenizer final : public TokenizerBase {
  public:
    explicit BpeTokenizer(const gguf::File& file) : TokenizerBase(file) {
        bool known = true;
        pre_kind_ = pre_tokenizer_from_name(pre_, &known);
        if (!known) {
            // Quoted: warnings reach Python as str (fuzz finding, invalid UTF-8).
            warnings_.push_back("unknown tokenizer.ggml.pre " + gguf::quote(pre_) +
                                ": using the gpt2 pre-tokenizer, ids may differ from the "
                                "reference tokenizer");
        }
        // Llama 3's tokenizer.json sets ignore_merges: a word that is itself a token is kept.
        ignore_merges_ = pre_kind_ == PreTokenizer::Llama3;
        for (int b = 0; b < 256; ++b) {
            byte_id_[b] = find_token(unicode::byte_to_piece(static_cast<uint8_t>(b)));
        }
        load_merges(file);
    }

  protected:
    void encode_text(std::string_view text, bool, std::vector<int32_t>& out) const override {
        std::vector<std::string_view> words;
        pre_tokenize(pre_kind_, text, words);
        Scratch s;
        // Words repeat a lot in real text (Zipf); a per-call cache keyed by views into `text`
        // skips the merge loop for repeats without any shared mutable state.
        std::unordered_map<std::string_view, std::pair<size_t, size_t>> seen;
        std::vector<int32_t> cached;
        for (std::string_view w : words) {
            if (w.size() > kMaxCachedWord) {
                encode_word(w, s, out);
                continue;
            }
            const auto it = seen.find(w);
            if (it != seen.end()) {
                out.insert(out.end(),
                           cached.begin() + static_cast<std::ptrdiff_t>(it->second.first),
                           cached.begin() + static_cast<std::ptrdiff_t>(it->second.second));
                continue;
            }
            const size_t begin = out.size();
            encode_word(w, s, out);
            const size_t at = cached.size();
            cached.insert(cached.end(), out.begin() + static_cast<std::ptrdiff_t>(begin),
                          out.end());
            seen.emplace(w, std::make_pair(at, cached.size()));
        }
    }

    std::string piece_bytes(int32_t id) const override {
        const std::string& t = tokens_[static_cast<size_t>(id)];
        std::string out;
        size_t i = 0;
        while (i < t.size()) {
            uint32_t cp;
            const size_t len = unicode::decode_utf8(t.data() + i, t.size() - i, &cp);
            const int b = cp == unicode::kInvalid ? -1 : unicode::piece_char_to_byte(cp);
            if (b >= 0) {
                out += static_cast<char>(b);
            } else {
                out.append(t, i, len);  // not in the byte alphabet: keep the text as is
            }
            i += len;
        }
        return out;
    }

  private:
    struct Scratch {
        std::vector<int32_t> id, prev, next;
        std::vector<Candidate> heap;
        std::string mapped;
    };

    static uint64_t pair_key(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }

    void load_merges(const gguf::File& file) {
        const auto* merges = file.get_string_array("tokenizer.ggml.merges");
        if (!merges) throw FormatError("missing key tokenizer.ggml.merges (needed by gpt2 BPE)");
        merges_.reserve(merges->size());
        for (size_t r = 0; r < merges->size(); ++r) {
            const std::string& m = (*merges)[r];
            const size_t sp = m.find(' ', 1);
            if (sp == std::string::npos || sp + 1 >= m.size()) {
                throw FormatError("tokenizer.ggml.merges[" + std::to_string(r) + "] = " +
                                  gguf::quote(m) + " is not two tokens separated by a space");
            }
            const std::string_view left(m.data(), sp), right(m.data() + sp + 1, m.size() - sp - 1);
            const int32_t a = find_token(left), b = find_token(right);
            const int32_t c = find_token(std::string(left) + std::string(right));
            if (a < 0 || b < 0 || c < 0) {
                throw FormatError("tokenizer.ggml.merges[" + std::to_string(r) + "] = " +
                                  gguf::quote(m) + " names a token that is not in the vocabulary");
            }
            // A repeated pair keeps its first (best) rank.
            merges_.emplace(pair_key(a, b), MergeInfo{static_cast<int32_t>(r), c});
        }
    }

    void push_pair(Scratch& s, int32_t left) const {
        const int32_t right = s.next[static_cast<size_t>(left)];
        if (right < 0) return;
        const int32_t a = s.id[static_cast<size_t>(left)], b = s.id[static_cast<size_t>(right)];
        if (a < 0 || b < 0) return;
        const auto it = merges_.find(pair_key(a, b));
        if (it == merges_.end()) return;
        s.heap.push_back({it->second.rank, left, a, b});
        std::push_heap(s.heap.begin(), s.heap.end());
    }

    void encode_word(std::string_view word, Scratch& s, std::vector<int32_t>& out) const {
        if (ignore_merges_) {
            s.mapped.clear();
            for (char c : word) s.mapped += unicode::byte_to_piece(static_cast<uint8_t>(c));
            const int32_t whole = find_token(s.mapped);
            if (whole >= 0) {
                out.push_back(whole);
                return;
            }
        }
        const auto n = static_cast<int32_t>(word.size());
        s.id.resize(word.size());
        s.prev.resize(word.size());
        s.next.resize(word.size());
        for (int32_t i = 0; i < n; ++i) {
            s.id[static_cast<size_t>(i)] =
                byte_id_[static_cast<uint8_t>(word[static_cast<size_t>(i)])];
            s.prev[static_cast<size_t>(i)] = i - 1;
            s.next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
        }
        s.heap.clear();
        for (int32_t i = 0; i + 1 < n; ++i) push_pair(s, i);
        while (!s.heap.empty()) {
            std::pop_heap(s.heap.begin(), s.heap.end());
            const Candidate c = s.heap.back();
            s.heap.pop_back();
            const auto l = static_cast<size_t>(c.left);
            const int32_t r = s.next[l];
            // Stale entry: one side was merged away since it was queued.
            if (s.id[l] != c.left_id || r < 0 || s.id[static_cast<size_t>(r)] != c.right_id) {
                continue;
            }
            s.id[l] = merges_.at(pair_key(c.left_id, c.right_id)).result;
            const int32_t rn = s.next[static_cast<size_t>(r)];
            s.next[l] = rn;
            if (rn >= 0) s.prev[static_cast<size_t>(rn)] = c.left;
            s.id[static_cast<size_t>(r)] = -2;  // dead
            if (s.prev[l] >= 0) push_pair(s, s.prev[l]);
            push_pair(s, c.left);
        }
        for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = s.next[static_cast<size_t>(i)]) {
            // A byte whose symbol the vocabulary lacks is dropped, as HF tokenizers (without
            // an unk token) and llama.cpp do.
            const int32_t id = s.id[static_cast<size_t>(i)];
            if (id >= 0) out.push_back(id);
        }
    }

    PreTokenizer pre_kind_ = PreTokenizer::Gpt2;
    bool ignore_merges_ = false;
    std::array<int32_t, 256> byte_id_{};
    std::unordered_map<uint64_t, MergeInfo> merges_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const gguf::File& file) {
    return std::make_unique<BpeTokenizer>(file);
}

}  // namespace ffnskip
