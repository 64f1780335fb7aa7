// Shared machinery of the two tokenizer kinds: GGUF loading and validation, the special-token
// split of the input, and the decode loop. BpeTokenizer / SpmTokenizer add the algorithms.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_pretok.h"

namespace ffnskip {

enum TokenType : int32_t {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
};

class TokenizerBase : public Tokenizer {
  public:
    explicit TokenizerBase(const gguf::File& file);
    TokenizerBase(const TokenizerBase&) = delete;
    TokenizerBase& operator=(const TokenizerBase&) = delete;

    std::vector<int32_t> encode(std::string_view text, bool add_special,
                                bool parse_special) const override;
    std::string token_to_bytes(int32_t id) const override;
    std::string decode(const std::vector<int32_t>& ids, bool special) const override;

  protected:
    // Encodes plain text (no special tokens in it). `at_start`: the fragment begins the input.
    virtual void encode_text(std::string_view text, bool at_start,
                             std::vector<int32_t>& out) const = 0;
    // Bytes of a normal / byte / unknown token.
    virtual std::string piece_bytes(int32_t id) const = 0;

    void check_id(int32_t id) const;
    // -1 when absent. Views point into tokens_, which never changes after construction.
    int32_t find_token(std::string_view text) const;

    std::vector<float> scores_;
    std::unordered_map<std::string_view, int32_t> token_index_;

  private:
    void load_special_ids(const gguf::File& file);
    void build_special_matcher();
    void build_eog(const gguf::File& file);

    // Control and user-defined tokens by first byte, longest first (for parse_special).
    std::vector<std::vector<int32_t>> special_by_byte_;
};

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const gguf::File& file);
std::unique_ptr<Tokenizer> make_spm_tokenizer(const gguf::File& file);

}  // namespace ffnskip
