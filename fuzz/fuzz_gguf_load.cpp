// GGUF bytes -> gguf::File::parse -> everything a model load validates (Model::from_file:
// hparams, tensor shapes and types against the architecture, data bounds, tokenizer, skip
// profile). A FormatError (any ffnskip::Error) is a clean rejection; a crash, a sanitizer report,
// a broken invariant (fuzz_common.h) or any other exception is a bug.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "fuzz_common.h"

using namespace ffnskip;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::unique_ptr<gguf::File> file;
    try {
        file = gguf::File::parse(data, size, "<fuzz>");
    } catch (const Error&) {
        return 0;
    }
    fuzz::check_file(*file);

    // The tokenizer alone, as _core.Tokenizer loads it (vocab-only files get this far).
    std::unique_ptr<Tokenizer> tok;
    try {
        tok = Tokenizer::from_gguf(*file);
    } catch (const Error&) {
    }
    if (tok) fuzz::check_tokenizer(*tok);

    std::shared_ptr<Model> model;
    try {
        model = Model::from_file(std::move(file));
    } catch (const Error&) {
        return 0;
    }
    fuzz::check_model(*model);
    return 0;
}
