// Pre-tokenizers of byte-level BPE vocabularies: the regexes named by tokenizer.ggml.pre,
// written as hand matchers over code points. Each matcher follows the regex's semantics exactly
// (ordered alternation, greedy quantifiers with backtracking where it matters).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ffnskip {

enum class PreTokenizer {
    Gpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    Llama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
             // | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    Qwen2,   // Llama3 with \p{N} instead of \p{N}{1,3}
    Smollm,  // every \p{N} isolated, then Gpt2 on the rest
    // Sequences of Split(Isolated) steps, see tokenizer_pretok_deepseek.cpp:
    DeepseekLlm,    // [\r\n] | \s?[cased letters]+ | \s?[punct]+ | \s+$ | [CJK]+ | \p{N}+
    DeepseekCoder,  // [\r\n] | \s?\p{L}+ | \s?\p{P}+ | [CJK]+ | \p{N}
};

// Maps a tokenizer.ggml.pre value; *known = false for a name we do not implement (-> Gpt2).
PreTokenizer pre_tokenizer_from_name(const std::string& name, bool* known);

// Appends the pieces of `text` to `out` (they cover `text` exactly, in order).
void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<std::string_view>& out);

// The DeepSeek rules (kind is DeepseekLlm or DeepseekCoder); pre_tokenize dispatches here.
void pre_tokenize_deepseek(PreTokenizer kind, std::string_view text,
                           std::vector<std::string_view>& out);

}  // namespace ffnskip
