#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/thread_pool.h"
#include "io/ggml_blocks.h"

namespace qf::gguf {
namespace {

constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
// ggml itself caps tensor names at 63 bytes (GGML_MAX_NAME = 64 with the NUL); qforge accepts
// longer ones but bounds them, so a corrupt length fails here rather than as a huge string.
constexpr uint64_t kMaxTensorNameBytes = 256;
constexpr uint64_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT

// Smallest encodings, used to bound counts by the bytes left before anything is allocated:
// a metadata pair is at least a key length (8) + a value type (4) + a 1-byte value; a tensor
// info is at least a name length (8) + n_dims (4) + one dimension (8) + a type (4) + an
// offset (8); a string is at least its 8-byte length.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    case ValueType::STRING: case ValueType::ARRAY: return 0;
  }
  return 0;
}

bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 || t == ValueType::UINT64;
}
bool is_signed(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 || t == ValueType::INT64;
}
bool is_integer(ValueType t) { return is_unsigned(t) || is_signed(t); }
bool is_float(ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; }

// Bounds-checked little-endian reads over the file's bytes. Every failure names the file, the
// field being read and where.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& field) const {
    QF_CHECK(n <= left(), file_, ": truncated: ", field, " needs ", n, " bytes at offset ", pos_, " but only ",
             left(), " remain");
  }
  template <typename T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // GGUF is little-endian, as is every host qforge targets
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& field, uint64_t max_len = std::numeric_limits<uint64_t>::max()) {
    const uint64_t n = read<uint64_t>(field + " (string length)");
    QF_CHECK(n <= max_len, file_, ": ", field, " has length ", n, ", more than the limit of ", max_len);
    need(n, field);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& file_;
};

ValueType read_value_type(Reader& r, const std::string& file, const std::string& field) {
  const uint32_t raw = r.read<uint32_t>(field);
  QF_CHECK(raw <= static_cast<uint32_t>(ValueType::FLOAT64), file, ": ", field, " is ", raw,
           ", not a GGUF value type (0..12)");
  return static_cast<ValueType>(raw);
}

// One scalar of type t (not STRING/ARRAY) as the Value variant's storage for it.
template <typename Sink>
void read_scalar(Reader& r, ValueType t, const std::string& file, const std::string& field, Sink&& sink) {
  switch (t) {
    case ValueType::UINT8: sink(uint64_t(r.read<uint8_t>(field))); break;
    case ValueType::UINT16: sink(uint64_t(r.read<uint16_t>(field))); break;
    case ValueType::UINT32: sink(uint64_t(r.read<uint32_t>(field))); break;
    case ValueType::UINT64: sink(r.read<uint64_t>(field)); break;
    case ValueType::INT8: sink(int64_t(r.read<int8_t>(field))); break;
    case ValueType::INT16: sink(int64_t(r.read<int16_t>(field))); break;
    case ValueType::INT32: sink(int64_t(r.read<int32_t>(field))); break;
    case ValueType::INT64: sink(r.read<int64_t>(field)); break;
    case ValueType::FLOAT32: sink(double(r.read<float>(field))); break;
    case ValueType::FLOAT64: sink(r.read<double>(field)); break;
    case ValueType::BOOL: {
      const uint8_t b = r.read<uint8_t>(field);
      QF_CHECK(b <= 1, file, ": ", field, " is a bool stored as ", int(b), " (must be 0 or 1)");
      sink(b == 1);
      break;
    }
    case ValueType::STRING: case ValueType::ARRAY: QF_ASSERT(false);
  }
}

Value read_array(Reader& r, const std::string& file, const std::string& field) {
  Value v;
  v.type = ValueType::ARRAY;
  v.array_type = read_value_type(r, file, field + " (array element type)");
  QF_CHECK(v.array_type != ValueType::ARRAY, file, ": ", field, " is an array of arrays, which GGUF readers do not support");
  const uint64_t count = r.read<uint64_t>(field + " (array length)");
  const uint64_t min_elem = v.array_type == ValueType::STRING ? 8 : scalar_size(v.array_type);
  QF_CHECK(count <= r.left() / min_elem, file, ": ", field, " claims ", count, " elements of type ",
           value_type_name(v.array_type), ", more than the ", r.left(), " bytes left in the file can hold");
  const std::string elem_field = field + " (array element)";
  if (v.array_type == ValueType::STRING) {
    std::vector<std::string> out;
    out.reserve(count);
    for (uint64_t i = 0; i < count; ++i) out.push_back(r.read_string(elem_field));
    v.data = std::move(out);
  } else if (v.array_type == ValueType::BOOL) {
    std::vector<uint8_t> out;
    out.reserve(count);
    for (uint64_t i = 0; i < count; ++i) read_scalar(r, v.array_type, file, elem_field, [&](auto x) { out.push_back(uint8_t(x)); });
    v.data = std::move(out);
  } else if (is_float(v.array_type)) {
    std::vector<double> out;
    out.reserve(count);
    for (uint64_t i = 0; i < count; ++i) read_scalar(r, v.array_type, file, elem_field, [&](auto x) { out.push_back(double(x)); });
    v.data = std::move(out);
  } else {
    std::vector<int64_t> out;
    out.reserve(count);
    for (uint64_t i = 0; i < count; ++i)
      read_scalar(r, v.array_type, file, elem_field, [&](auto x) {
        if constexpr (std::is_same_v<decltype(x), uint64_t>)
          QF_CHECK(x <= uint64_t(std::numeric_limits<int64_t>::max()), file, ": ", field, " holds ", x,
                   ", which does not fit a signed 64-bit integer");
        out.push_back(int64_t(x));
      });
    v.data = std::move(out);
  }
  return v;
}

Value read_value(Reader& r, ValueType t, const std::string& file, const std::string& field) {
  if (t == ValueType::ARRAY) return read_array(r, file, field);
  Value v;
  v.type = t;
  if (t == ValueType::STRING) {
    v.data = r.read_string(field);
  } else {
    read_scalar(r, t, file, field, [&](auto x) { v.data = x; });
  }
  return v;
}

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "?";
}

// ---- Metadata ------------------------------------------------------------------------------

const Value* Metadata::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const Value& Metadata::require(const std::string& key) const {
  const Value* v = find(key);
  QF_CHECK(v, source_, ": metadata key '", key, "' is missing");
  return *v;
}

namespace {

std::string type_str(const Value& v) {
  if (v.type != ValueType::ARRAY) return value_type_name(v.type);
  return str("ARRAY of ", value_type_name(v.array_type));
}

[[noreturn]] void wrong_type(const std::string& source, const std::string& key, const Value& v, const char* expected) {
  fail(source, ": metadata key '", key, "' has type ", type_str(v), ", expected ", expected);
}

int64_t as_int(const std::string& source, const std::string& key, const Value& v) {
  if (is_unsigned(v.type)) {
    const uint64_t u = std::get<uint64_t>(v.data);
    QF_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), source, ": metadata key '", key, "' = ", u, " is too large");
    return int64_t(u);
  }
  if (is_signed(v.type)) return std::get<int64_t>(v.data);
  wrong_type(source, key, v, "an integer");
}

double as_float(const std::string& source, const std::string& key, const Value& v) {
  if (is_float(v.type)) return std::get<double>(v.data);
  if (is_integer(v.type)) return double(as_int(source, key, v));
  wrong_type(source, key, v, "a number");
}

}  // namespace

std::string Metadata::get_string(const std::string& key) const {
  const Value& v = require(key);
  if (v.type != ValueType::STRING) wrong_type(source_, key, v, "STRING");
  return std::get<std::string>(v.data);
}
int64_t Metadata::get_int(const std::string& key) const { return as_int(source_, key, require(key)); }
double Metadata::get_float(const std::string& key) const { return as_float(source_, key, require(key)); }
bool Metadata::get_bool(const std::string& key) const {
  const Value& v = require(key);
  if (v.type != ValueType::BOOL) wrong_type(source_, key, v, "BOOL");
  return std::get<bool>(v.data);
}
std::vector<std::string> Metadata::get_string_array(const std::string& key) const {
  const Value& v = require(key);
  if (v.type != ValueType::ARRAY || v.array_type != ValueType::STRING) wrong_type(source_, key, v, "an ARRAY of STRING");
  return std::get<std::vector<std::string>>(v.data);
}
std::vector<int64_t> Metadata::get_int_array(const std::string& key) const {
  const Value& v = require(key);
  if (v.type != ValueType::ARRAY || !is_integer(v.array_type)) wrong_type(source_, key, v, "an ARRAY of integers");
  return std::get<std::vector<int64_t>>(v.data);
}
std::vector<double> Metadata::get_float_array(const std::string& key) const {
  const Value& v = require(key);
  if (v.type == ValueType::ARRAY && is_float(v.array_type)) return std::get<std::vector<double>>(v.data);
  if (v.type == ValueType::ARRAY && is_integer(v.array_type)) {
    const auto& ints = std::get<std::vector<int64_t>>(v.data);
    return std::vector<double>(ints.begin(), ints.end());
  }
  wrong_type(source_, key, v, "an ARRAY of numbers");
}
std::string Metadata::get_string(const std::string& key, const std::string& def) const {
  return has(key) ? get_string(key) : def;
}
int64_t Metadata::get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }
double Metadata::get_float(const std::string& key, double def) const { return has(key) ? get_float(key) : def; }
bool Metadata::get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }

std::vector<std::string> Metadata::keys() const {
  std::vector<std::string> out;
  out.reserve(kv_.size());
  for (const auto& [k, v] : kv_) out.push_back(k);
  return out;
}

// ---- TensorInfo ------------------------------------------------------------------------------

Shape TensorInfo::shape() const { return Shape(ne.rbegin(), ne.rend()); }
int64_t TensorInfo::numel() const { return shape_numel(ne); }

// ---- File ------------------------------------------------------------------------------------

std::shared_ptr<const File> File::open(const std::string& path) { return parse(MappedFile::open(path)); }

std::shared_ptr<const File> File::parse(std::shared_ptr<const MappedFile> file) {
  QF_ASSERT(file);
  std::shared_ptr<File> f(new File(ByteSource::mapped(std::move(file))));
  f->parse_all();
  return f;
}

std::shared_ptr<const File> File::parse_bytes(const uint8_t* data, size_t size, const std::string& name) {
  std::shared_ptr<File> f(new File(ByteSource::copied(data, size, name)));
  f->parse_all();
  return f;
}

void File::parse_all() {
  const std::string& file = bytes_.name;
  const uint8_t* const bytes = bytes_.data;
  const size_t size = bytes_.size;
  Reader r(bytes, size, file);
  metadata_.set_source(file);

  // Header: magic, version, counts.
  QF_CHECK(size >= 4, file, ": not a GGUF file (", size, " bytes, too short for the magic)");
  QF_CHECK(std::memcmp(bytes, "GGUF", 4) == 0, file, ": not a GGUF file (the first 4 bytes are not 'GGUF')");
  r.read<uint32_t>("magic");
  version_ = r.read<uint32_t>("version");
  QF_CHECK(version_ != 1, file, ": GGUF version 1 is not supported (only versions 2 and 3); re-convert the model"
           " with a current llama.cpp");
  // A big-endian GGUF stores the version byte-swapped (0x03000000 for 3).
  QF_CHECK(!(version_ & 0xffff0000u) || (version_ & 0xffffu), file, ": this is a big-endian GGUF file (version field ",
           version_, "); only little-endian files are supported");
  QF_CHECK(version_ == 2 || version_ == 3, file, ": unsupported GGUF version ", version_, " (supported: 2 and 3)");
  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  QF_CHECK(n_kv <= r.left() / kMinKvBytes, file, ": metadata count ", n_kv, " cannot fit in the ", r.left(),
           " bytes left in the file");

  // Metadata.
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.read_string(str("metadata key #", i));
    QF_CHECK(!metadata_.has(key), file, ": metadata key '", key, "' appears twice");
    const std::string field = str("metadata '", key, "'");
    const ValueType type = read_value_type(r, file, field + " (value type)");
    metadata_.set(key, read_value(r, type, file, field));
  }

  if (const Value* a = metadata_.find("general.alignment")) {
    QF_CHECK(a->type == ValueType::UINT32, file, ": metadata key 'general.alignment' has type ", type_str(*a),
             ", expected UINT32");
    const uint64_t align = std::get<uint64_t>(a->data);
    QF_CHECK(is_power_of_two(align), file, ": general.alignment = ", align, " is not a power of two");
    alignment_ = align;
  } else {
    alignment_ = kDefaultAlignment;
  }

  // Tensor infos.
  QF_CHECK(n_tensors <= r.left() / kMinTensorInfoBytes, file, ": tensor count ", n_tensors, " cannot fit in the ",
           r.left(), " bytes left in the file");
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.name = r.read_string(str("name of tensor #", i), kMaxTensorNameBytes);
    QF_CHECK(!t.name.empty(), file, ": tensor #", i, " has an empty name");
    QF_CHECK(!index_.count(t.name), file, ": tensor '", t.name, "' appears twice");
    const std::string what = str("tensor '", t.name, "'");
    const uint32_t n_dims = r.read<uint32_t>(what + " n_dims");
    QF_CHECK(n_dims >= 1 && n_dims <= kMaxDims, file, ": ", what, " has ", n_dims, " dimensions (must be 1 to ", kMaxDims, ")");
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = r.read<uint64_t>(str(what, " ne[", d, "]"));
      QF_CHECK(ne >= 1 && ne <= uint64_t(std::numeric_limits<int64_t>::max()), file, ": ", what, " ne[", d, "] = ", ne,
               " is not a positive size");
      QF_CHECK(numel <= std::numeric_limits<int64_t>::max() / int64_t(ne), file, ": ", what,
               " has dimensions whose product overflows 64 bits");
      numel *= int64_t(ne);
      t.ne.push_back(int64_t(ne));
    }
    const uint32_t raw_type = r.read<uint32_t>(what + " type");
    const TypeTraits* tt = find_type_traits(raw_type);
    QF_CHECK(tt, file, ": ", what, " has ggml type ", raw_type,
             ", which qforge cannot read (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K,"
             " Q4_K, Q5_K, Q6_K, Q8_K)");
    t.type = tt->type;
    QF_CHECK(t.ne[0] % tt->block_size == 0, file, ": ", what, " has ne[0] = ", t.ne[0], ", not a multiple of ",
             tt->name, "'s block size ", tt->block_size);
    t.offset = r.read<uint64_t>(what + " offset");
    QF_CHECK(t.offset % alignment_ == 0, file, ": ", what, " offset ", t.offset, " is not a multiple of the alignment ",
             alignment_);
    // Bytes, computed only once they are known to fit the file (so the product cannot overflow).
    const uint64_t blocks = uint64_t(numel) / uint64_t(tt->block_size);
    QF_CHECK(blocks <= size / tt->block_bytes, file, ": ", what, " (", tt->name, ", shape ", shape_str(t.shape()),
             ") needs more bytes than the whole file holds (", size, ")");
    t.nbytes = blocks * tt->block_bytes;
    index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the next multiple of the alignment; every tensor inside the file.
  data_offset_ = (r.pos() + alignment_ - 1) / alignment_ * alignment_;
  if (tensors_.empty()) return;
  QF_CHECK(data_offset_ <= size, file, ": truncated: the data section would start at byte ", data_offset_,
           " but the file has ", size, " bytes");
  const uint64_t data_size = size - data_offset_;
  for (TensorInfo& t : tensors_) {
    QF_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset, file, ": tensor '", t.name, "' (bytes ",
             t.offset, "..", t.offset + t.nbytes, " of the data section) extends past the end of the file (data section: ",
             data_size, " bytes)");
    t.data = bytes + data_offset_ + t.offset;
  }
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    QF_CHECK(a.offset + a.nbytes <= b.offset, file, ": tensors '", a.name, "' (bytes ", a.offset, "..",
             a.offset + a.nbytes, ") and '", b.name, "' (from byte ", b.offset, ") overlap");
  }
}

const TensorInfo* File::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor File::to_f32(const TensorInfo& t) const {
  QF_ASSERT(t.data >= bytes_.data && t.data + t.nbytes <= bytes_.data + bytes_.size);
  const Shape shape = t.shape();
  if (t.type == GGMLType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0)
    return Tensor::borrow(DType::F32, shape, t.data, bytes_.keepalive);
  Tensor out = Tensor::empty(DType::F32, shape);
  float* dst = out.data_mut<float>();
  const TypeTraits& tt = type_traits(t.type);
  const int64_t row_len = t.ne[0];
  const int64_t rows = t.numel() / row_len;
  const size_t row_bytes = size_t(row_len / tt.block_size) * tt.block_bytes;
  // About 64K elements per task: large enough to amortise scheduling, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / row_len);
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      dequantize_row(t.type, t.data + size_t(row) * row_bytes, dst + row * row_len, row_len);
  });
  return out;
}

// ---- Writer (metadata only) ------------------------------------------------------------------

namespace {

// The reader's memcpy and the writer's append both assume a little-endian host, as GGUF is.
static_assert(std::endian::native == std::endian::little, "qforge's GGUF code assumes a little-endian host");

class Writer {
 public:
  template <typename T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.append(b, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    out += s;
  }
  std::string out;
};

// Whether v fits the integer type t (int_fits for a signed value, uint_fits for an unsigned one).
bool int_fits(ValueType t, int64_t v) {
  switch (t) {
    case ValueType::UINT8: return v >= 0 && v <= 0xff;
    case ValueType::UINT16: return v >= 0 && v <= 0xffff;
    case ValueType::UINT32: return v >= 0 && v <= int64_t(0xffffffffu);
    case ValueType::UINT64: return v >= 0;
    case ValueType::INT8: return v >= -128 && v <= 127;
    case ValueType::INT16: return v >= -32768 && v <= 32767;
    case ValueType::INT32: return v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max();
    case ValueType::INT64: return true;
    default: return false;
  }
}
bool uint_fits(ValueType t, uint64_t v) {
  return t == ValueType::UINT64 || (v <= uint64_t(std::numeric_limits<int64_t>::max()) && int_fits(t, int64_t(v)));
}

// Writes v (already range-checked) as integer type t.
void put_int(Writer& w, ValueType t, uint64_t bits) {
  switch (scalar_size(t)) {
    case 1: w.put<uint8_t>(uint8_t(bits)); break;
    case 2: w.put<uint16_t>(uint16_t(bits)); break;
    case 4: w.put<uint32_t>(uint32_t(bits)); break;
    default: w.put<uint64_t>(bits); break;
  }
}

void put_float(Writer& w, ValueType t, double v, const std::string& key) {
  if (t == ValueType::FLOAT64) return w.put<double>(v);
  // A finite double beyond float's range would silently become infinity.
  QF_CHECK(!std::isfinite(v) || std::abs(v) <= double(std::numeric_limits<float>::max()), "GGUF writer: metadata '",
           key, "' holds ", v, ", outside FLOAT32's range");
  w.put<float>(float(v));
}

[[noreturn]] void bad_storage(const std::string& key, const Value& v) {
  fail("GGUF writer: metadata '", key, "' is declared ", type_str(v),
       " but holds data of another kind (see gguf::Value for the storage of each type)");
}

void put_scalar(Writer& w, const std::string& key, const Value& v) {
  const ValueType t = v.type;
  if (is_unsigned(t)) {
    const uint64_t* u = std::get_if<uint64_t>(&v.data);
    if (!u) bad_storage(key, v);
    QF_CHECK(uint_fits(t, *u), "GGUF writer: metadata '", key, "' = ", *u, " does not fit ", value_type_name(t));
    return put_int(w, t, *u);
  }
  if (is_signed(t)) {
    const int64_t* i = std::get_if<int64_t>(&v.data);
    if (!i) bad_storage(key, v);
    QF_CHECK(int_fits(t, *i), "GGUF writer: metadata '", key, "' = ", *i, " does not fit ", value_type_name(t));
    return put_int(w, t, uint64_t(*i));
  }
  if (is_float(t)) {
    const double* d = std::get_if<double>(&v.data);
    if (!d) bad_storage(key, v);
    return put_float(w, t, *d, key);
  }
  if (t == ValueType::BOOL) {
    const bool* b = std::get_if<bool>(&v.data);
    if (!b) bad_storage(key, v);
    return w.put<uint8_t>(*b ? 1 : 0);
  }
  if (t == ValueType::STRING) {
    const std::string* s = std::get_if<std::string>(&v.data);
    if (!s) bad_storage(key, v);
    return w.put_string(*s);
  }
  fail("GGUF writer: metadata '", key, "' has value type ", uint32_t(t), ", not a GGUF value type");
}

void put_array(Writer& w, const std::string& key, const Value& v) {
  const ValueType et = v.array_type;
  QF_CHECK(et != ValueType::ARRAY, "GGUF writer: metadata '", key, "' is an array of arrays, which GGUF readers do not support");
  w.put<uint32_t>(uint32_t(et));
  if (is_integer(et)) {
    const auto* a = std::get_if<std::vector<int64_t>>(&v.data);
    if (!a) bad_storage(key, v);
    w.put<uint64_t>(a->size());
    for (size_t i = 0; i < a->size(); ++i) {
      QF_CHECK(int_fits(et, (*a)[i]), "GGUF writer: metadata '", key, "'[", i, "] = ", (*a)[i], " does not fit ",
               value_type_name(et));
      put_int(w, et, uint64_t((*a)[i]));
    }
  } else if (is_float(et)) {
    const auto* a = std::get_if<std::vector<double>>(&v.data);
    if (!a) bad_storage(key, v);
    w.put<uint64_t>(a->size());
    for (double x : *a) put_float(w, et, x, key);
  } else if (et == ValueType::BOOL) {
    const auto* a = std::get_if<std::vector<uint8_t>>(&v.data);
    if (!a) bad_storage(key, v);
    w.put<uint64_t>(a->size());
    for (size_t i = 0; i < a->size(); ++i) {
      QF_CHECK((*a)[i] <= 1, "GGUF writer: metadata '", key, "'[", i, "] is a bool stored as ", int((*a)[i]),
               " (must be 0 or 1)");
      w.put<uint8_t>((*a)[i]);
    }
  } else if (et == ValueType::STRING) {
    const auto* a = std::get_if<std::vector<std::string>>(&v.data);
    if (!a) bad_storage(key, v);
    w.put<uint64_t>(a->size());
    for (const std::string& s : *a) w.put_string(s);
  } else {
    fail("GGUF writer: metadata '", key, "' has array element type ", uint32_t(et), ", not a GGUF value type");
  }
}

}  // namespace

std::string serialize_metadata(const Metadata& md) {
  const std::vector<std::string> keys = md.keys();  // sorted (std::map): the same bytes for the same metadata
  uint64_t alignment = kDefaultAlignment;
  if (const Value* a = md.find("general.alignment")) {
    // What the reader requires of it, checked here so the file written is one it accepts.
    const uint64_t* u = std::get_if<uint64_t>(&a->data);
    QF_CHECK(a->type == ValueType::UINT32 && u && is_power_of_two(*u) && *u <= 0xffffffffu,
             "GGUF writer: general.alignment must be a UINT32 power of two");
    alignment = *u;
  }
  Writer w;
  w.out.append("GGUF", 4);
  w.put<uint32_t>(3);            // version
  w.put<uint64_t>(0);            // tensor count
  w.put<uint64_t>(keys.size());  // metadata count
  for (const std::string& key : keys) {
    const Value& v = *md.find(key);
    w.put_string(key);
    w.put<uint32_t>(uint32_t(v.type));
    if (v.type == ValueType::ARRAY)
      put_array(w, key, v);
    else
      put_scalar(w, key, v);
  }
  // No tensor infos; the data section (empty) starts at the next multiple of the alignment.
  w.out.resize((w.out.size() + alignment - 1) / alignment * alignment, '\0');
  return std::move(w.out);
}

}  // namespace qf::gguf
