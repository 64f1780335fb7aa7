// UTF-8 decoding that never fails, Unicode general categories (generated tables), and the
// GPT-2 byte <-> printable code point mapping used by byte-level BPE vocabularies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ffnskip::unicode {

// Order fixed by tools/gen_unicode_tables.py.
enum Category : uint8_t {
    Cn,
    Lu,
    Ll,
    Lt,
    Lm,
    Lo,
    Mn,
    Mc,
    Me,
    Nd,
    Nl,
    No,
    Pc,
    Pd,
    Ps,
    Pe,
    Pi,
    Pf,
    Po,
    Sm,
    Sc,
    Sk,
    So,
    Zs,
    Zl,
    Zp,
    Cc,
    Cf,
    Cs,
    Co,
};

// Stand-in code point for a byte that does not start a valid UTF-8 sequence: outside Unicode,
// so it is neither a letter, a number nor whitespace (it groups with punctuation, as the
// byte-level pre-tokenizers of llama.cpp treat undecodable input).
constexpr uint32_t kInvalid = 0x110000;

// Decodes the code point at s[0..n) (n >= 1). Returns its byte length; an invalid, overlong,
// surrogate or truncated sequence yields kInvalid with length 1.
size_t decode_utf8(const char* s, size_t n, uint32_t* cp);
void append_utf8(std::string& out, uint32_t cp);
// Replaces every invalid byte sequence with U+FFFD.
std::string sanitize_utf8(std::string_view s);

Category category(uint32_t cp);
bool is_letter(uint32_t cp);      // \p{L}
bool is_number(uint32_t cp);      // \p{N}
bool is_mark(uint32_t cp);        // \p{M}
bool is_whitespace(uint32_t cp);  // White_Space property, what \s matches in the regex engines

// GPT-2 byte-level alphabet: every byte maps to one printable code point (as UTF-8) and back.
const std::string& byte_to_piece(uint8_t b);
int piece_char_to_byte(uint32_t cp);  // -1 when cp is not in the alphabet

}  // namespace ffnskip::unicode
