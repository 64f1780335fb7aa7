// SentencePiece vocabularies (tokenizer.ggml.model = "llama"). Spaces become "▁" and, with
// add_space_prefix, the input gets a leading "▁". Two segmentations, both as sentencepiece does:
//  - "bpe" (default, what llama.cpp runs for every SPM file): repeatedly merge the adjacent pair
//    whose concatenation is a piece with the highest score (ties: leftmost);
//  - "unigram" (tokenizer.ffnskip.spm_algorithm = "unigram"): Viterbi over piece log-probs.
// Characters no piece covers fall back to <0xNN> byte tokens, else to the unknown token.
#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <queue>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace ffnskip {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK
constexpr const char* kAlgorithmKey = "tokenizer.ffnskip.spm_algorithm";
// sentencepiece scores an unknown character this far below the worst piece.
constexpr float kUnkPenalty = 10.0f;

class SpmTokenizer final : public TokenizerBase {
  public:
    explicit SpmTokenizer(const gguf::File& file) : TokenizerBase(file) {
        const std::string algo = file.get_string(kAlgorithmKey, "bpe");
        if (algo != "bpe" && algo != "unigram") {
            throw FormatError(std::string(kAlgorithmKey) + " = " + gguf::quote(algo) +
                              " (expected 'bpe' or 'unigram')");
        }
        unigram_ = algo == "unigram";
        if (scores_.empty()) scores_.assign(tokens_.size(), 0.0f);
        byte_id_.fill(-1);
        float min_score = std::numeric_limits<float>::max();
        for (size_t i = 0; i < tokens_.size(); ++i) {
            const int32_t t = token_type_[i];
            const std::string& s = tokens_[i];
            if (t == kByte) {
                unsigned v = 0;
                char tail = 0;
                if (s.size() == 6 && std::sscanf(s.c_str(), "<0x%2X%c", &v, &tail) == 2 &&
                    tail == '>') {
                    byte_id_[v] = static_cast<int32_t>(i);
                }
            } else if ((t == kNormal || t == kUserDefined) && !s.empty()) {
                pieces_.emplace(s, static_cast<int32_t>(i));
                max_piece_len_ = std::max(max_piece_len_, s.size());
                if (t == kNormal) {
                    min_score = std::min(min_score, scores_[i]);
                    max_score_ = std::max(max_score_, scores_[i]);
                }
            }
        }
        unk_score_ = (pieces_.empty() ? 0.0f : min_score) - kUnkPenalty;
    }

  protected:
    void encode_text(std::string_view text, bool at_start,
                     std::vector<int32_t>& out) const override {
        if (text.empty()) return;
        std::string norm;
        norm.reserve(text.size() + text.size() / 2 + 3);
        if (add_space_prefix_ && at_start) norm += kSpace;
        for (char c : text) {
            if (c == ' ') {
                norm += kSpace;
            } else {
                norm += c;
            }
        }
        if (unigram_) {
            viterbi(norm, out);
        } else {
            merge(norm, out);
        }
    }

    std::string piece_bytes(int32_t id) const override {
        const std::string& t = tokens_[static_cast<size_t>(id)];
        if (token_type_[static_cast<size_t>(id)] == kByte) {
            for (int b = 0; b < 256; ++b) {
                if (byte_id_[b] == id) return std::string(1, static_cast<char>(b));
            }
        }
        std::string out;
        size_t i = 0;
        while (i < t.size()) {
            if (t.compare(i, kSpace.size(), kSpace) == 0) {
                out += ' ';
                i += kSpace.size();
            } else {
                out += t[i++];
            }
        }
        return out;
    }

  private:
    int32_t find_piece(std::string_view s) const {
        const auto it = pieces_.find(s);
        return it == pieces_.end() ? -1 : it->second;
    }

    // A piece no token covers: its bytes as <0xNN> tokens when the vocabulary has them.
    void emit_unknown(std::string_view s, std::vector<int32_t>& out) const {
        for (char c : s) {
            const int32_t b = byte_id_[static_cast<uint8_t>(c)];
            if (b < 0) {
                if (unk_ >= 0) out.push_back(unk_);
                return;
            }
            out.push_back(b);
        }
    }

    void emit(std::string_view s, std::vector<int32_t>& out) const {
        const int32_t id = find_piece(s);
        if (id >= 0) {
            out.push_back(id);
        } else {
            emit_unknown(s, out);
        }
    }

    static size_t char_len(std::string_view s, size_t i) {
        uint32_t cp;
        return unicode::decode_utf8(s.data() + i, s.size() - i, &cp);
    }

    void merge(std::string_view text, std::vector<int32_t>& out) const {
        struct Sym {
            size_t begin, len;
            int32_t prev, next;
        };
        struct Pair {
            float score;
            int32_t left, right;
            size_t len;
            bool operator<(const Pair& o) const {  // max-heap: best score, then leftmost
                return score != o.score ? score < o.score : left > o.left;
            }
        };
        std::vector<Sym> sym;
        for (size_t i = 0; i < text.size();) {
            const size_t len = char_len(text, i);
            const auto idx = static_cast<int32_t>(sym.size());
            sym.push_back({i, len, idx - 1, -1});
            if (idx > 0) sym[static_cast<size_t>(idx - 1)].next = idx;
            i += len;
        }
        std::priority_queue<Pair> agenda;
        auto try_pair = [&](int32_t l, int32_t r) {
            if (l < 0 || r < 0) return;
            const Sym& a = sym[static_cast<size_t>(l)];
            const Sym& b = sym[static_cast<size_t>(r)];
            const int32_t id = find_piece(text.substr(a.begin, a.len + b.len));
            if (id >= 0) agenda.push({scores_[static_cast<size_t>(id)], l, r, a.len + b.len});
        };
        for (size_t i = 0; i + 1 < sym.size(); ++i) {
            try_pair(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
        }
        while (!agenda.empty()) {
            const Pair p = agenda.top();
            agenda.pop();
            Sym& a = sym[static_cast<size_t>(p.left)];
            Sym& b = sym[static_cast<size_t>(p.right)];
            // Stale: a side was merged away or grew since the pair was queued.
            if (a.len == 0 || b.len == 0 || a.next != p.right || a.len + b.len != p.len) continue;
            a.len += b.len;
            b.len = 0;
            a.next = b.next;
            if (b.next >= 0) sym[static_cast<size_t>(b.next)].prev = p.left;
            try_pair(a.prev, p.left);
            try_pair(p.left, a.next);
        }
        for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<size_t>(i)].next) {
            const Sym& s = sym[static_cast<size_t>(i)];
            emit(text.substr(s.begin, s.len), out);
        }
    }

    void viterbi(std::string_view text, std::vector<int32_t>& out) const {
        struct Node {
            float score = 0;
            int64_t from = -1;  // start of the best last piece ending here; -1: unreached
            int32_t id = -1;    // -1: unknown character
        };
        const size_t n = text.size();
        std::vector<Node> best(n + 1);
        best[0].from = 0;
        for (size_t start = 0; start < n; ++start) {
            if (best[start].from < 0) continue;  // inside a character
            const float base = best[start].score;
            const size_t one = char_len(text, start);
            bool single = false;
            // Candidate pieces in order of increasing length, as sentencepiece's trie walk
            // yields them; on equal scores the first one found stays.
            for (size_t end = start + one; end <= n && end - start <= max_piece_len_;
                 end += char_len(text, end)) {
                const int32_t id = find_piece(text.substr(start, end - start));
                if (id >= 0) {
                    const float s = token_type_[static_cast<size_t>(id)] == kUserDefined
                                        ? static_cast<float>(end - start) * max_score_ - 0.1f
                                        : scores_[static_cast<size_t>(id)];
                    Node& t = best[end];
                    if (t.from < 0 || base + s > t.score)
                        t = {base + s, static_cast<int64_t>(start), id};
                    if (end - start == one) single = true;
                }
                if (end == n) break;
            }
            if (!single) {
                Node& t = best[start + one];
                if (t.from < 0 || base + unk_score_ > t.score) {
                    t = {base + unk_score_, static_cast<int64_t>(start), -1};
                }
            }
        }
        std::vector<std::pair<size_t, size_t>> spans;  // (start, end) from the back
        std::vector<int32_t> ids;
        for (size_t end = n; end > 0;) {
            const auto start = static_cast<size_t>(best[end].from);
            spans.emplace_back(start, end);
            ids.push_back(best[end].id);
            end = start;
        }
        for (size_t k = spans.size(); k-- > 0;) {
            if (ids[k] >= 0) {
                out.push_back(ids[k]);
            } else {
                emit_unknown(text.substr(spans[k].first, spans[k].second - spans[k].first), out);
            }
        }
    }

    bool unigram_ = false;
    std::unordered_map<std::string_view, int32_t> pieces_;  // normal + user-defined pieces
    std::array<int32_t, 256> byte_id_{};
    size_t max_piece_len_ = 0;
    float max_score_ = std::numeric_limits<float>::lowest();
    float unk_score_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(const gguf::File& file) {
    return std::make_unique<SpmTokenizer>(file);
}

}  // namespace ffnskip
