// ffnskip_tokenize / ffnskip_detokenize / ffnskip_token_piece over the model's tokenizer.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "boundary.h"
#include "handles.h"

using namespace ffnskip;
using namespace ffnskip::capi;

namespace {

// Reports the length, then copies text and its NUL terminator if the buffer has room for both.
void copy_text(const std::string& text, char* buf, size_t capacity, size_t* length) {
    *length = text.size();
    if (text.size() >= capacity) {
        fail(FFNSKIP_ERR_BUFFER_TOO_SMALL, "buf has room for " + std::to_string(capacity) +
                                               " bytes, " + std::to_string(text.size() + 1) +
                                               " needed (the text and its NUL)");
    }
    need(buf, "buf");
    text.copy(buf, text.size());
    buf[text.size()] = '\0';
}

}  // namespace

extern "C" {

FFNSKIP_API ffnskip_status ffnskip_tokenize(const ffnskip_model* model, const char* text,
                                            size_t text_len, bool add_special, bool parse_special,
                                            int32_t* tokens, int32_t capacity, int32_t* n_tokens) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_model> m(model, "model", Access::Shared);
        if (text_len > 0) need(text, "text");
        need(n_tokens, "n_tokens");
        if (capacity < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "capacity must be >= 0, got " + std::to_string(capacity));
        }
        const std::vector<int32_t> ids = m->model->tokenizer().encode(
            std::string_view(text_len > 0 ? text : "", text_len), add_special, parse_special);
        if (ids.size() > static_cast<size_t>(INT32_MAX)) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT, "the text has more than INT32_MAX tokens");
        }
        copy_out(ids.data(), ids.size(), tokens, static_cast<size_t>(capacity), n_tokens, "tokens");
    });
}

FFNSKIP_API ffnskip_status ffnskip_detokenize(const ffnskip_model* model, const int32_t* tokens,
                                              int32_t n_tokens, bool special, char* buf,
                                              size_t capacity, size_t* length) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_model> m(model, "model", Access::Shared);
        if (n_tokens < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "n_tokens must be >= 0, got " + std::to_string(n_tokens));
        }
        if (n_tokens > 0) need(tokens, "tokens");
        need(length, "length");
        const std::vector<int32_t> ids(tokens, tokens + n_tokens);
        copy_text(m->model->tokenizer().decode(ids, special), buf, capacity, length);
    });
}

FFNSKIP_API ffnskip_status ffnskip_token_piece(const ffnskip_model* model, int32_t token, char* buf,
                                               size_t capacity, size_t* length) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_model> m(model, "model", Access::Shared);
        need(length, "length");
        copy_text(m->model->tokenizer().token_to_bytes(token), buf, capacity, length);
    });
}

}  // extern "C"
