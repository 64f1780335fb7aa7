#include "gguf.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>

#include "ggml_types.h"

// The on-disk format is little-endian and values are copied out with memcpy.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the GGUF reader assumes a little-endian host");

namespace ffnskip::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;
// Smallest possible encodings, used to bound counts by the bytes that remain before anything
// is allocated: a KV is key length (8) + one key byte + value type (4) + a 1-byte value; a
// tensor info is name length (8) + one name byte + n_dims (4) + type (4) + offset (8).
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

// Length of the well-formed UTF-8 sequence at s[i] (as Python's strict decoder defines it:
// no overlongs, no surrogates, nothing above U+10FFFF), or 0.
size_t utf8_seq_len(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
    const uint8_t c = b(i);
    if (c < 0x80) return 1;
    size_t n = 0;
    uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
    for (size_t k = 2; k < n; ++k) {
        if ((b(i + k) & 0xc0) != 0x80) return 0;
    }
    return n;
}

// A name from the file, quoted for a message. Messages become Python str, so bytes that are
// not valid UTF-8 (and control bytes) are escaped; very long names are cut.
std::string quoted(std::string_view s) {
    constexpr size_t kMaxShown = 80;
    std::string out = "'";
    const size_t end = std::min(s.size(), kMaxShown);
    for (size_t i = 0; i < end;) {
        const size_t n = utf8_seq_len(s, i);
        const uint8_t c = static_cast<uint8_t>(s[i]);
        if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7f))) {
            out += fmt("\\x%02x", c);
            ++i;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
    out += s.size() > kMaxShown ? "'..." : "'";
    return out;
}

// Wire size of a fixed-size value type; 0 for STRING / ARRAY, whose size is in the data.
uint64_t fixed_size(ValueType t) {
    switch (t) {
        case ValueType::UINT8:
        case ValueType::INT8:
        case ValueType::BOOL:
            return 1;
        case ValueType::UINT16:
        case ValueType::INT16:
            return 2;
        case ValueType::UINT32:
        case ValueType::INT32:
        case ValueType::FLOAT32:
            return 4;
        case ValueType::UINT64:
        case ValueType::INT64:
        case ValueType::FLOAT64:
            return 8;
        default:
            return 0;
    }
}

bool is_integer_type(ValueType t) {
    switch (t) {
        case ValueType::UINT8:
        case ValueType::INT8:
        case ValueType::UINT16:
        case ValueType::INT16:
        case ValueType::UINT32:
        case ValueType::INT32:
        case ValueType::UINT64:
        case ValueType::INT64:
            return true;
        default:
            return false;
    }
}

bool is_float_type(ValueType t) {
    return t == ValueType::FLOAT32 || t == ValueType::FLOAT64;
}

bool known_type(uint32_t t) {
    return t <= static_cast<uint32_t>(ValueType::FLOAT64);
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
    return __builtin_mul_overflow(a, b, out);
}
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) {
    return __builtin_add_overflow(a, b, out);
}

// Reads from [data, data + size) and refuses to step past the end. Every message is prefixed
// with the file name and carries the offset of the failed read.
class Cursor {
  public:
    Cursor(const uint8_t* data, size_t size, const std::string& name)
        : data_(data), size_(size), name_(name) {}

    size_t pos() const { return pos_; }
    uint64_t remaining() const { return size_ - pos_; }

    [[noreturn]] void fail(const std::string& msg) const { throw FormatError(name_ + ": " + msg); }

    void need(uint64_t n, const std::string& what) const {
        if (n > remaining()) {
            fail(fmt("truncated: %s needs %" PRIu64 " bytes at offset %zu but only %" PRIu64
                     " remain",
                     what.c_str(), n, pos_, remaining()));
        }
    }

    template <typename T>
    T read(const std::string& what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(const std::string& what) {
        const size_t at = pos_;
        const uint64_t len = read<uint64_t>(what + " length");
        if (len > remaining()) {
            fail(fmt("%s at offset %zu: length %" PRIu64 " exceeds the %" PRIu64 " bytes remaining",
                     what.c_str(), at, len, remaining()));
        }
        std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return s;
    }

  private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    const std::string& name_;
};

std::string type_label(ValueType t, ValueType array_type) {
    if (t != ValueType::ARRAY) return value_type_name(t);
    return std::string("array of ") + value_type_name(array_type);
}

void read_scalar(Cursor& c, ValueType t, Value& v, const std::string& what) {
    switch (t) {
        case ValueType::UINT8:
            v.u = c.read<uint8_t>(what);
            break;
        case ValueType::UINT16:
            v.u = c.read<uint16_t>(what);
            break;
        case ValueType::UINT32:
            v.u = c.read<uint32_t>(what);
            break;
        case ValueType::UINT64:
            v.u = c.read<uint64_t>(what);
            break;
        case ValueType::INT8:
            v.i = c.read<int8_t>(what);
            break;
        case ValueType::INT16:
            v.i = c.read<int16_t>(what);
            break;
        case ValueType::INT32:
            v.i = c.read<int32_t>(what);
            break;
        case ValueType::INT64:
            v.i = c.read<int64_t>(what);
            break;
        case ValueType::FLOAT32:
            v.f = c.read<float>(what);
            break;
        case ValueType::FLOAT64:
            v.f = c.read<double>(what);
            break;
        case ValueType::BOOL: {
            const uint8_t b = c.read<uint8_t>(what);
            if (b > 1) c.fail(fmt("%s: bool byte is %u, not 0 or 1", what.c_str(), b));
            v.u = b;
            break;
        }
        default:
            c.fail(what + ": not a scalar type");
    }
    if (t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
        t == ValueType::UINT64 || t == ValueType::BOOL) {
        if (v.u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            v.i = static_cast<int64_t>(v.u);
        }
    } else if (is_integer_type(t)) {
        v.u = static_cast<uint64_t>(v.i);
    }
}

void read_array(Cursor& c, Value& v, const std::string& key) {
    const std::string what = "array of key " + key;
    const uint32_t et = c.read<uint32_t>(what + " element type");
    if (et == static_cast<uint32_t>(ValueType::ARRAY)) {
        c.fail("key " + key + ": nested array (array of arrays) is not supported");
    }
    if (!known_type(et))
        c.fail(fmt("key %s: unknown array element value type %u", key.c_str(), et));
    v.array_type = static_cast<ValueType>(et);
    const size_t count_at = c.pos();
    const uint64_t n = c.read<uint64_t>(what + " length");
    // Each string costs at least its 8-byte length, so the same bound guards string arrays.
    const uint64_t elem = v.array_type == ValueType::STRING ? 8 : fixed_size(v.array_type);
    if (n > c.remaining() / elem) {
        c.fail(fmt("key %s: array length %" PRIu64 " at offset %zu exceeds the %" PRIu64
                   " bytes remaining (elements take at least %" PRIu64 " bytes)",
                   key.c_str(), n, count_at, c.remaining(), elem));
    }
    const size_t count = static_cast<size_t>(n);
    if (v.array_type == ValueType::STRING) {
        v.strings.reserve(count);
        for (size_t k = 0; k < count; ++k) v.strings.push_back(c.read_string(what + " element"));
    } else if (is_float_type(v.array_type)) {
        v.floats.reserve(count);
        for (size_t k = 0; k < count; ++k) {
            Value e;
            read_scalar(c, v.array_type, e, what + " element");
            v.floats.push_back(e.f);
        }
    } else {
        // u64 elements above INT64_MAX keep their bit pattern; array_type says how to read them.
        v.ints.reserve(count);
        for (size_t k = 0; k < count; ++k) {
            Value e;
            read_scalar(c, v.array_type, e, what + " element");
            v.ints.push_back(static_cast<int64_t>(e.u));
        }
    }
}

}  // namespace

std::string quote(std::string_view s) {
    return quoted(s);
}

const char* value_type_name(ValueType t) {
    switch (t) {
        case ValueType::UINT8:
            return "u8";
        case ValueType::INT8:
            return "i8";
        case ValueType::UINT16:
            return "u16";
        case ValueType::INT16:
            return "i16";
        case ValueType::UINT32:
            return "u32";
        case ValueType::INT32:
            return "i32";
        case ValueType::FLOAT32:
            return "f32";
        case ValueType::BOOL:
            return "bool";
        case ValueType::STRING:
            return "string";
        case ValueType::ARRAY:
            return "array";
        case ValueType::UINT64:
            return "u64";
        case ValueType::INT64:
            return "i64";
        case ValueType::FLOAT64:
            return "f64";
    }
    return "unknown";
}

bool Value::is_integer() const {
    return is_integer_type(type);
}
bool Value::is_float() const {
    return is_float_type(type);
}
size_t Value::array_size() const {
    if (type != ValueType::ARRAY) return 0;
    if (array_type == ValueType::STRING) return strings.size();
    if (is_float_type(array_type)) return floats.size();
    return ints.size();
}

std::unique_ptr<File> File::open(const std::string& path) {
    std::unique_ptr<File> f(new File());
    f->map_ = std::make_unique<MappedFile>(path);
    f->bytes_ = f->map_->data();
    f->size_ = f->map_->size();
    f->name_ = path;
    f->parse_all();
    return f;
}

std::unique_ptr<File> File::parse(const uint8_t* data, size_t size, const std::string& name) {
    std::unique_ptr<File> f(new File());
    f->bytes_ = data;
    f->size_ = size;
    f->name_ = name;
    f->parse_all();
    return f;
}

void File::parse_all() {
    Cursor c(bytes_, size_, name_);
    if (size_ == 0) c.fail("empty file (0 bytes), not a GGUF file");

    const uint32_t magic = c.read<uint32_t>("magic");
    if (magic != kMagic) {
        c.fail(fmt("bad magic 0x%08x (expected 0x%08x \"GGUF\"): not a GGUF file", magic, kMagic));
    }
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3) {
        // A byte-swapped small number means a big-endian file, which needs its own reader.
        if ((version_ & 0xffffu) == 0 && version_ != 0) {
            c.fail(fmt("unsupported GGUF version 0x%08x (big-endian files are not supported)",
                       version_));
        }
        c.fail(fmt("unsupported GGUF version %u (supported: 2, 3)", version_));
    }
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata KV count");
    if (n_kv > c.remaining() / kMinKvBytes) {
        c.fail(fmt("metadata KV count %" PRIu64 " is larger than the file could hold (%" PRIu64
                   " bytes remain)",
                   n_kv, c.remaining()));
    }
    if (n_tensors > c.remaining() / kMinTensorInfoBytes) {
        c.fail(fmt("tensor count %" PRIu64 " is larger than the file could hold (%" PRIu64
                   " bytes remain)",
                   n_tensors, c.remaining()));
    }

    kv_.reserve(static_cast<size_t>(n_kv));
    for (uint64_t k = 0; k < n_kv; ++k) {
        const size_t key_at = c.pos();
        std::string key = c.read_string(fmt("key of metadata KV %" PRIu64, k));
        if (key.empty()) {
            c.fail(fmt("metadata KV %" PRIu64 " at offset %zu has an empty key", k, key_at));
        }
        const std::string qk = quoted(key);
        if (kv_index_.count(key)) c.fail(fmt("duplicate key %s at offset %zu", qk.c_str(), key_at));
        const uint32_t t = c.read<uint32_t>("value type of key " + qk);
        if (!known_type(t)) c.fail(fmt("key %s: unknown value type %u", qk.c_str(), t));
        Value v;
        v.type = static_cast<ValueType>(t);
        const std::string what = "value of key " + qk;
        if (v.type == ValueType::STRING) {
            v.str = c.read_string(what);
        } else if (v.type == ValueType::ARRAY) {
            read_array(c, v, qk);
        } else {
            read_scalar(c, v.type, v, what);
        }
        kv_index_.emplace(key, kv_.size());
        kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const Value* a = find("general.alignment")) {
        if (a->type != ValueType::UINT32) {
            c.fail(std::string("general.alignment must be u32, got ") +
                   type_label(a->type, a->array_type));
        }
        if (a->u == 0 || (a->u & (a->u - 1)) != 0) {
            c.fail(fmt("general.alignment %" PRIu64 " is not a nonzero power of two", a->u));
        }
        alignment_ = a->u;
    } else {
        alignment_ = kDefaultAlignment;
    }

    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t k = 0; k < n_tensors; ++k) {
        const size_t info_at = c.pos();
        TensorInfo ti;
        ti.name = c.read_string(fmt("name of tensor %" PRIu64, k));
        if (ti.name.empty()) {
            c.fail(fmt("tensor %" PRIu64 " at offset %zu has an empty name", k, info_at));
        }
        if (tensor_index_.count(ti.name)) {
            c.fail(fmt("duplicate tensor name %s at offset %zu", quoted(ti.name).c_str(), info_at));
        }
        const std::string qn = quoted(ti.name);
        const char* tn = qn.c_str();
        const std::string what = "tensor " + qn;
        const uint32_t n_dims = c.read<uint32_t>(what + " dimension count");
        if (n_dims > kMaxDims) c.fail(fmt("tensor %s has %u dimensions (at most 4)", tn, n_dims));
        ti.n_dims = static_cast<int>(n_dims);
        uint64_t n_el = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = c.read<uint64_t>(what + " dimension");
            if (ne == 0) c.fail(fmt("tensor %s: dimension %u is zero", tn, d));
            if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                c.fail(fmt("tensor %s: dimension %u is negative (%" PRId64 ")", tn, d,
                           static_cast<int64_t>(ne)));
            }
            if (mul_overflows(n_el, ne, &n_el) ||
                n_el > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                c.fail(fmt("tensor %s: element count overflows int64 at dimension %u", tn, d));
            }
            ti.ne[d] = static_cast<int64_t>(ne);
        }
        ti.n_elements = static_cast<int64_t>(n_el);
        ti.type = c.read<uint32_t>(what + " type");
        const TypeInfo* info = type_info(ti.type);
        if (info == nullptr) c.fail(fmt("tensor %s has unknown ggml type %u", tn, ti.type));
        if (info->block_size <= 0 || info->block_bytes == 0) {
            c.fail(fmt("tensor %s: ggml type %s has no usable block geometry", tn, info->name));
        }
        const uint64_t bs = static_cast<uint64_t>(info->block_size);
        if (static_cast<uint64_t>(ti.ne[0]) % bs != 0) {
            c.fail(fmt("tensor %s: row length %" PRId64
                       " is not a multiple of the block size %" PRIu64 " of %s",
                       tn, ti.ne[0], bs, info->name));
        }
        if (mul_overflows(n_el / bs, info->block_bytes, &ti.nbytes)) {
            c.fail(fmt("tensor %s: byte size overflows", tn));
        }
        ti.offset = c.read<uint64_t>(what + " offset");
        if (ti.offset % alignment_ != 0) {
            c.fail(fmt("tensor %s: offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                       tn, ti.offset, alignment_));
        }
        tensor_index_.emplace(ti.name, tensors_.size());
        tensors_.push_back(std::move(ti));
    }

    // Files without tensors (vocab-only) may end right after the header, unpadded.
    const uint64_t header_end = c.pos();
    if (add_overflows(header_end, alignment_ - 1, &data_offset_)) {
        c.fail("data section offset overflows");
    }
    data_offset_ -= data_offset_ % alignment_;
    if (tensors_.empty()) return;
    if (data_offset_ > size_) {
        c.fail(fmt("data section starts at offset %" PRIu64
                   ", beyond the end of the file (%zu bytes)",
                   data_offset_, size_));
    }
    const uint64_t data_size = size_ - data_offset_;
    for (TensorInfo& ti : tensors_) {
        uint64_t end = 0;
        if (add_overflows(ti.offset, ti.nbytes, &end)) {
            c.fail(fmt("tensor %s: offset %" PRIu64 " + size %" PRIu64 " overflows",
                       quoted(ti.name).c_str(), ti.offset, ti.nbytes));
        }
        if (end > data_size) {
            c.fail(fmt("tensor %s: data [%" PRIu64 ", %" PRIu64
                       ") lies beyond the end of the file (data section holds %" PRIu64 " bytes)",
                       quoted(ti.name).c_str(), ti.offset, end, data_size));
        }
        ti.data = bytes_ + data_offset_ + ti.offset;
    }
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const TensorInfo& ti : tensors_) by_offset.push_back(&ti);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < by_offset.size(); ++k) {
        const TensorInfo* prev = by_offset[k - 1];
        const TensorInfo* cur = by_offset[k];
        if (cur->offset < prev->offset + prev->nbytes) {
            c.fail(fmt("tensors %s [%" PRIu64 ", %" PRIu64 ") and %s [%" PRIu64 ", %" PRIu64
                       ") overlap",
                       quoted(prev->name).c_str(), prev->offset, prev->offset + prev->nbytes,
                       quoted(cur->name).c_str(), cur->offset, cur->offset + cur->nbytes));
        }
    }
}

const Value* File::find(std::string_view key) const {
    auto it = kv_index_.find(std::string(key));
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {

[[noreturn]] void wrong_type(const std::string& file, std::string_view key, const char* expected,
                             const Value& v) {
    throw FormatError(file + ": key " + quoted(key) + " has type " +
                      type_label(v.type, v.array_type) + ", expected " + expected);
}

}  // namespace

int64_t File::get_int(std::string_view key, int64_t def) const {
    const Value* v = find(key);
    if (v == nullptr) return def;
    if (!v->is_integer()) wrong_type(name_, key, "an integer", *v);
    if (v->type == ValueType::UINT64 &&
        v->u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw FormatError(fmt("%s: key %s value %" PRIu64 " does not fit in int64", name_.c_str(),
                              quoted(key).c_str(), v->u));
    }
    return v->i;
}

double File::get_float(std::string_view key, double def) const {
    const Value* v = find(key);
    if (v == nullptr) return def;
    if (v->is_float()) return v->f;
    if (v->is_integer()) {
        return v->type == ValueType::UINT64 ? static_cast<double>(v->u) : static_cast<double>(v->i);
    }
    wrong_type(name_, key, "a number", *v);
}

bool File::get_bool(std::string_view key, bool def) const {
    const Value* v = find(key);
    if (v == nullptr) return def;
    if (v->type != ValueType::BOOL) wrong_type(name_, key, "bool", *v);
    return v->u != 0;
}

std::string File::get_string(std::string_view key, const std::string& def) const {
    const Value* v = find(key);
    if (v == nullptr) return def;
    if (v->type != ValueType::STRING) wrong_type(name_, key, "string", *v);
    return v->str;
}

const std::vector<std::string>* File::get_string_array(std::string_view key) const {
    const Value* v = find(key);
    if (v == nullptr) return nullptr;
    if (v->type != ValueType::ARRAY || v->array_type != ValueType::STRING) {
        wrong_type(name_, key, "array of string", *v);
    }
    return &v->strings;
}

const std::vector<int64_t>* File::get_int_array(std::string_view key) const {
    const Value* v = find(key);
    if (v == nullptr) return nullptr;
    if (v->type != ValueType::ARRAY ||
        !(is_integer_type(v->array_type) || v->array_type == ValueType::BOOL)) {
        wrong_type(name_, key, "array of integers", *v);
    }
    return &v->ints;
}

const std::vector<double>* File::get_float_array(std::string_view key) const {
    const Value* v = find(key);
    if (v == nullptr) return nullptr;
    if (v->type != ValueType::ARRAY || !is_float_type(v->array_type)) {
        wrong_type(name_, key, "array of floats", *v);
    }
    return &v->floats;
}

int64_t File::require_int(std::string_view key) const {
    if (find(key) == nullptr) throw FormatError(name_ + ": missing key " + quoted(key));
    return get_int(key, 0);
}

double File::require_float(std::string_view key) const {
    if (find(key) == nullptr) throw FormatError(name_ + ": missing key " + quoted(key));
    return get_float(key, 0);
}

std::string File::require_string(std::string_view key) const {
    if (find(key) == nullptr) throw FormatError(name_ + ": missing key " + quoted(key));
    return get_string(key, std::string());
}

const TensorInfo* File::tensor(std::string_view name) const {
    auto it = tensor_index_.find(std::string(name));
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace ffnskip::gguf
