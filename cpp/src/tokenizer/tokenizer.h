// Tokenizers loaded from GGUF metadata: byte-level BPE (tokenizer.ggml.model = "gpt2") with the
// per-model pre-tokenizer named by tokenizer.ggml.pre, and SentencePiece ("llama").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gguf.h"

namespace ffnskip {

class Tokenizer {
  public:
    // Throws FormatError naming the problem (missing/odd arrays, ids out of range, bad merges).
    static std::unique_ptr<Tokenizer> from_gguf(const gguf::File& file);
    virtual ~Tokenizer() = default;

    // add_special: prepend BOS / append EOS as the file's add_bos_token/add_eos_token say.
    // parse_special: recognise control/user-defined token strings in the text.
    virtual std::vector<int32_t> encode(std::string_view text, bool add_special,
                                        bool parse_special) const = 0;
    // Bytes of one token as it appears in text (byte-level BPE and <0xNN> decoded, SPM's
    // "▁" -> " "). May be a partial UTF-8 sequence. InvalidArgument for an id out of range.
    virtual std::string token_to_bytes(int32_t id) const = 0;
    // Concatenated bytes of the ids, invalid UTF-8 replaced by U+FFFD. Control tokens (BOS/EOS...)
    // are rendered as their text only if `special` is true. SPM: the leading space added by
    // add_space_prefix is removed from the first token.
    virtual std::string decode(const std::vector<int32_t>& ids, bool special = false) const = 0;

    int32_t n_vocab() const { return static_cast<int32_t>(tokens_.size()); }
    const std::string& token_text(int32_t id) const;  // raw vocab string; InvalidArgument if bad id
    int32_t bos_id() const { return bos_; }           // -1 when the file has none
    int32_t eos_id() const { return eos_; }
    bool add_bos() const { return add_bos_; }
    bool add_eos() const { return add_eos_; }
    // End-of-generation ids: eos plus eot-like tokens found in the vocab (<|im_end|>,
    // <|endoftext|>, <|eot_id|>, <end_of_turn>, ...).
    const std::vector<int32_t>& eog_ids() const { return eog_; }
    bool is_eog(int32_t id) const;
    bool is_control(int32_t id) const;
    const std::string& model_name() const { return model_; }  // "gpt2" / "llama"
    const std::string& pre_name() const { return pre_; }
    // Non-fatal problems found while loading (e.g. an unknown pre-tokenizer that fell back to
    // the gpt2 rule). Empty when none.
    const std::vector<std::string>& warnings() const { return warnings_; }

  protected:
    std::vector<std::string> tokens_;
    std::vector<int32_t>
        token_type_;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
    std::vector<int32_t> eog_;
    std::vector<std::string> warnings_;
    std::string model_, pre_;
    int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
    bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
};

}  // namespace ffnskip
