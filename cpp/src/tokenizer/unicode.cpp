#include "tokenizer/unicode.h"

#include <array>

namespace ffnskip::unicode {

namespace {

struct CategoryRange {
    uint32_t first, last;
    uint8_t cat;
};

#include "tokenizer/unicode_tables.inc"

// Pre-tokenizing English text is dominated by ASCII; skip the binary search for it.
struct AsciiTable {
    std::array<uint8_t, 128> cat{};
    AsciiTable() {
        for (const auto& r : kCategoryRanges) {
            for (uint32_t c = r.first; c <= r.last && c < 128; ++c) cat[c] = r.cat;
        }
    }
};
const AsciiTable kAscii;

struct ByteMap {
    std::array<std::string, 256> piece;
    std::array<int16_t, 512> back{};  // every mapped code point is < 512
    ByteMap() {
        back.fill(-1);
        int extra = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable =
                (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            const uint32_t cp = printable ? static_cast<uint32_t>(b) : 256u + extra++;
            append_utf8(piece[b], cp);
            back[cp] = static_cast<int16_t>(b);
        }
    }
};
const ByteMap& byte_map() {
    static const ByteMap m;
    return m;
}

}  // namespace

size_t decode_utf8(const char* s, size_t n, uint32_t* cp) {
    const auto* u = reinterpret_cast<const unsigned char*>(s);
    const unsigned c = u[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = kInvalid;
        return 1;
    }
    if (len > n) {
        *cp = kInvalid;
        return 1;
    }
    for (size_t i = 1; i < len; ++i) {
        if ((u[i] & 0xC0) != 0x80) {
            *cp = kInvalid;
            return 1;
        }
        v = (v << 6) | (u[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = kInvalid;
        return 1;
    }
    *cp = v;
    return len;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

std::string sanitize_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        uint32_t cp;
        const size_t len = decode_utf8(s.data() + i, s.size() - i, &cp);
        if (cp == kInvalid) {
            out += "\xEF\xBF\xBD";
        } else {
            out.append(s.data() + i, len);
        }
        i += len;
    }
    return out;
}

Category category(uint32_t cp) {
    if (cp < 128) return static_cast<Category>(kAscii.cat[cp]);
    if (cp > 0x10FFFF) return Cn;
    size_t lo = 0, hi = sizeof(kCategoryRanges) / sizeof(kCategoryRanges[0]);
    while (hi - lo > 1) {
        const size_t mid = (lo + hi) / 2;
        if (kCategoryRanges[mid].first <= cp) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return static_cast<Category>(kCategoryRanges[lo].cat);
}

bool is_letter(uint32_t cp) {
    const Category c = category(cp);
    return c >= Lu && c <= Lo;
}

bool is_number(uint32_t cp) {
    const Category c = category(cp);
    return c >= Nd && c <= No;
}

bool is_mark(uint32_t cp) {
    const Category c = category(cp);
    return c >= Mn && c <= Me;
}

bool is_whitespace(uint32_t cp) {
    // The Unicode White_Space property (PropList.txt); stable across Unicode versions.
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

const std::string& byte_to_piece(uint8_t b) {
    return byte_map().piece[b];
}

int piece_char_to_byte(uint32_t cp) {
    return cp < 512 ? byte_map().back[cp] : -1;
}

}  // namespace ffnskip::unicode
