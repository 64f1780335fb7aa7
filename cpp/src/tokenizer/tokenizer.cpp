#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace ffnskip {

namespace {

constexpr const char* kEotTexts[] = {
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>",
    "<|end|>",    "</s>",          "<|eom_id|>", "<|end_of_text|>",
};

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
    const std::string model = file.require_string("tokenizer.ggml.model");
    if (model == "gpt2") return make_bpe_tokenizer(file);
    if (model == "llama") return make_spm_tokenizer(file);
    // Fuzz finding: raw file bytes in a message broke its conversion to Python str.
    throw FormatError("unsupported tokenizer.ggml.model " + gguf::quote(model) +
                      " (supported: gpt2 = byte-level BPE, llama = SentencePiece)");
}

const std::string& Tokenizer::token_text(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
        throw InvalidArgument("token id " + std::to_string(id) + " out of range [0, " +
                              std::to_string(n_vocab()) + ")");
    }
    return tokens_[static_cast<size_t>(id)];
}

bool Tokenizer::is_eog(int32_t id) const {
    return std::find(eog_.begin(), eog_.end(), id) != eog_.end();
}

bool Tokenizer::is_control(int32_t id) const {
    return id >= 0 && id < n_vocab() && token_type_[static_cast<size_t>(id)] == kControl;
}

TokenizerBase::TokenizerBase(const gguf::File& file) {
    model_ = file.require_string("tokenizer.ggml.model");
    pre_ = file.get_string("tokenizer.ggml.pre", "default");
    const auto* tokens = file.get_string_array("tokenizer.ggml.tokens");
    if (!tokens) throw FormatError("missing key tokenizer.ggml.tokens");
    if (tokens->empty()) throw FormatError("tokenizer.ggml.tokens is empty");
    if (tokens->size() > static_cast<size_t>(INT32_MAX)) {
        throw FormatError("tokenizer.ggml.tokens has too many entries");
    }
    tokens_ = *tokens;
    const size_t n = tokens_.size();

    token_type_.assign(n, kNormal);
    if (const auto* types = file.get_int_array("tokenizer.ggml.token_type")) {
        if (types->size() != n) {
            throw FormatError("tokenizer.ggml.token_type has " + std::to_string(types->size()) +
                              " entries, expected " + std::to_string(n) + " (one per token)");
        }
        for (size_t i = 0; i < n; ++i) token_type_[i] = static_cast<int32_t>((*types)[i]);
    }
    if (const auto* scores = file.get_float_array("tokenizer.ggml.scores")) {
        if (scores->size() != n) {
            throw FormatError("tokenizer.ggml.scores has " + std::to_string(scores->size()) +
                              " entries, expected " + std::to_string(n) + " (one per token)");
        }
        scores_.assign(scores->begin(), scores->end());
    }

    // Duplicate strings keep their first id, as HF vocabularies resolve them.
    token_index_.reserve(n);
    for (size_t i = 0; i < n; ++i) token_index_.emplace(tokens_[i], static_cast<int32_t>(i));

    const bool spm = model_ == "llama";
    add_bos_ = file.get_bool("tokenizer.ggml.add_bos_token", spm);
    add_eos_ = file.get_bool("tokenizer.ggml.add_eos_token", false);
    add_space_prefix_ = file.get_bool("tokenizer.ggml.add_space_prefix", spm);
    load_special_ids(file);
    build_special_matcher();
    build_eog(file);
}

void TokenizerBase::load_special_ids(const gguf::File& file) {
    auto get = [&](const char* key) -> int32_t {
        const int64_t v = file.get_int(key, -1);
        if (v >= n_vocab()) {
            throw FormatError(std::string(key) + " = " + std::to_string(v) +
                              " is not a token id (n_vocab = " + std::to_string(n_vocab()) + ")");
        }
        return v < 0 ? -1 : static_cast<int32_t>(v);
    };
    bos_ = get("tokenizer.ggml.bos_token_id");
    eos_ = get("tokenizer.ggml.eos_token_id");
    unk_ = get("tokenizer.ggml.unknown_token_id");
    pad_ = get("tokenizer.ggml.padding_token_id");
    if (add_bos_ && bos_ < 0) add_bos_ = false;
    if (add_eos_ && eos_ < 0) add_eos_ = false;
}

void TokenizerBase::build_special_matcher() {
    special_by_byte_.assign(256, {});
    for (size_t i = 0; i < tokens_.size(); ++i) {
        const int32_t t = token_type_[i];
        if ((t == kControl || t == kUserDefined) && !tokens_[i].empty()) {
            special_by_byte_[static_cast<unsigned char>(tokens_[i][0])].push_back(
                static_cast<int32_t>(i));
        }
    }
    for (auto& bucket : special_by_byte_) {
        std::stable_sort(bucket.begin(), bucket.end(), [&](int32_t a, int32_t b) {
            return tokens_[static_cast<size_t>(a)].size() > tokens_[static_cast<size_t>(b)].size();
        });
    }
}

void TokenizerBase::build_eog(const gguf::File& file) {
    if (eos_ >= 0) eog_.push_back(eos_);
    for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
        const int64_t v = file.get_int(key, -1);
        if (v >= 0 && v < n_vocab()) eog_.push_back(static_cast<int32_t>(v));
    }
    for (const char* text : kEotTexts) {
        const int32_t id = find_token(text);
        if (id >= 0 && (token_type_[static_cast<size_t>(id)] == kControl ||
                        token_type_[static_cast<size_t>(id)] == kUserDefined || id == eos_)) {
            eog_.push_back(id);
        }
    }
    std::sort(eog_.begin(), eog_.end());
    eog_.erase(std::unique(eog_.begin(), eog_.end()), eog_.end());
}

int32_t TokenizerBase::find_token(std::string_view text) const {
    const auto it = token_index_.find(text);
    return it == token_index_.end() ? -1 : it->second;
}

void TokenizerBase::check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
        throw InvalidArgument("token id " + std::to_string(id) + " out of range [0, " +
                              std::to_string(n_vocab()) + ")");
    }
}

std::vector<int32_t> TokenizerBase::encode(std::string_view text, bool add_special,
                                           bool parse_special) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_special && add_bos_) out.push_back(bos_);
    if (!parse_special) {
        encode_text(text, true, out);
    } else {
        // Leftmost-longest match of control / user-defined token strings.
        size_t frag = 0, i = 0;
        while (i < text.size()) {
            int32_t hit = -1;
            for (int32_t id : special_by_byte_[static_cast<unsigned char>(text[i])]) {
                const std::string& s = tokens_[static_cast<size_t>(id)];
                if (text.compare(i, s.size(), s) == 0) {
                    hit = id;
                    break;
                }
            }
            if (hit < 0) {
                ++i;
                continue;
            }
            if (i > frag) encode_text(text.substr(frag, i - frag), frag == 0, out);
            out.push_back(hit);
            i += tokens_[static_cast<size_t>(hit)].size();
            frag = i;
        }
        if (frag < text.size()) encode_text(text.substr(frag), frag == 0, out);
    }
    if (add_special && add_eos_) out.push_back(eos_);
    return out;
}

std::string TokenizerBase::token_to_bytes(int32_t id) const {
    check_id(id);
    const int32_t t = token_type_[static_cast<size_t>(id)];
    if (t == kControl || t == kUserDefined) return tokens_[static_cast<size_t>(id)];
    return piece_bytes(id);
}

std::string TokenizerBase::decode(const std::vector<int32_t>& ids, bool special) const {
    std::string raw;
    bool strip_space = add_space_prefix_ && model_ == "llama";
    for (int32_t id : ids) {
        check_id(id);
        const int32_t t = token_type_[static_cast<size_t>(id)];
        if (t == kControl || t == kUnknown) {
            if (special) raw += tokens_[static_cast<size_t>(id)];
            continue;
        }
        if (t == kUserDefined) {
            raw += tokens_[static_cast<size_t>(id)];
            strip_space = false;
            continue;
        }
        std::string piece = piece_bytes(id);
        if (strip_space && !piece.empty()) {
            if (piece[0] == ' ') piece.erase(0, 1);
            strip_space = false;
        }
        raw += piece;
    }
    return unicode::sanitize_utf8(raw);
}

}  // namespace ffnskip
