// GGUF v2/v3 reader for untrusted files. Parsing walks a cursor that knows how many bytes remain;
// every read, count and allocation is checked first, and every failure is a FormatError whose
// message names the problem (and the key / tensor involved). Tensor data is never copied: a
// TensorInfo points into the mapped (or borrowed) bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ffnskip/ffnskip.h"
#include "mmap.h"

namespace ffnskip::gguf {

enum class ValueType : uint32_t {
    UINT8 = 0,
    INT8 = 1,
    UINT16 = 2,
    INT16 = 3,
    UINT32 = 4,
    INT32 = 5,
    FLOAT32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    UINT64 = 10,
    INT64 = 11,
    FLOAT64 = 12,
};
const char* value_type_name(ValueType t);
// A string taken from a file, quoted for an error message: invalid UTF-8 and control bytes are
// escaped (messages become Python str, which must decode), long strings are cut.
std::string quote(std::string_view s);

// One metadata value. Scalars are widened into `u`/`i`/`f`; arrays keep their element type in
// `array_type` and their elements in `strings` (STRING), `ints` (all integer types and BOOL) or
// `floats` (FLOAT32/FLOAT64). Nested arrays are rejected by the parser.
struct Value {
    ValueType type = ValueType::UINT8;
    ValueType array_type = ValueType::UINT8;
    uint64_t u = 0;  // unsigned scalars and BOOL
    int64_t i = 0;   // every integer scalar (unsigned ones too when they fit)
    double f = 0;    // FLOAT32 / FLOAT64 scalars
    std::string str;
    std::vector<std::string> strings;
    std::vector<int64_t> ints;
    std::vector<double> floats;

    bool is_integer() const;  // any integer scalar type
    bool is_float() const;    // FLOAT32 / FLOAT64 scalar
    size_t array_size() const;
};

struct TensorInfo {
    std::string name;
    uint32_t type = 0;  // GgmlType id (validated: known and with a block geometry)
    int n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the row length (contiguous), as in ggml
    int64_t n_elements = 0;
    uint64_t offset = 0;  // relative to the start of the data section, as stored
    uint64_t nbytes = 0;  // validated to lie inside the file
    const uint8_t* data = nullptr;
};

class File {
  public:
    // mmap the file and parse it. IoError for open/read failures, FormatError for bad content.
    static std::unique_ptr<File> open(const std::string& path);
    // Parse bytes the caller keeps alive (tests, fuzzing). `name` only appears in messages.
    static std::unique_ptr<File> parse(const uint8_t* data, size_t size,
                                       const std::string& name = "<memory>");

    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    const std::string& name() const { return name_; }
    size_t size() const { return size_; }
    const uint8_t* bytes() const { return bytes_; }
    uint64_t data_offset() const { return data_offset_; }

    // Metadata in file order.
    const std::vector<std::pair<std::string, Value>>& kv() const { return kv_; }
    const Value* find(std::string_view key) const;

    // Typed getters. Absent key: the default (or nullptr). Present with the wrong type:
    // FormatError naming the key, the expected and the actual type.
    int64_t get_int(std::string_view key, int64_t def) const;  // any integer type
    double get_float(std::string_view key, double def) const;  // float or integer types
    bool get_bool(std::string_view key, bool def) const;
    std::string get_string(std::string_view key, const std::string& def) const;
    const std::vector<std::string>* get_string_array(std::string_view key) const;
    const std::vector<int64_t>* get_int_array(std::string_view key) const;   // integer/bool arrays
    const std::vector<double>* get_float_array(std::string_view key) const;  // float arrays
    // Required variants: FormatError "missing key ..." when absent.
    int64_t require_int(std::string_view key) const;
    double require_float(std::string_view key) const;
    std::string require_string(std::string_view key) const;

    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* tensor(std::string_view name) const;  // nullptr when absent

    // Copies bytes [offset, offset + n) of a mapped file into anonymous memory in place (see
    // MappedFile::detach), so that reading them cannot fault if the file is truncated later.
    // Nothing to do for borrowed bytes.
    void detach(size_t offset, size_t n) {
        if (map_) map_->detach(offset, n);
    }

  private:
    File() = default;
    void parse_all();

    std::unique_ptr<MappedFile> map_;  // null when parsing borrowed memory
    const uint8_t* bytes_ = nullptr;
    size_t size_ = 0;
    std::string name_;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, Value>> kv_;
    std::unordered_map<std::string, size_t> kv_index_;
    std::vector<TensorInfo> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace ffnskip::gguf
