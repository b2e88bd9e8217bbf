#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "io/json_text.h"

namespace qf::safetensors {

namespace {

struct DtypeInfo {
  Dtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},     {Dtype::I8, "I8", 1},
    {Dtype::F8_E5M2, "F8_E5M2", 1}, {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::I16, "I16", 2},
    {Dtype::U16, "U16", 2},   {Dtype::F16, "F16", 2},   {Dtype::BF16, "BF16", 2},
    {Dtype::I32, "I32", 4},   {Dtype::U32, "U32", 4},   {Dtype::F32, "F32", 4},
    {Dtype::F64, "F64", 8},   {Dtype::I64, "I64", 8},   {Dtype::U64, "U64", 8},
};

const DtypeInfo& info(Dtype t) {
  for (const DtypeInfo& d : kDtypes)
    if (d.dtype == t) return d;
  QF_ASSERT(false);
}

constexpr char kMetadataKey[] = "__metadata__";

}  // namespace

const char* dtype_name(Dtype t) { return info(t).name; }
size_t dtype_size(Dtype t) { return info(t).size; }

std::optional<Dtype> parse_dtype(const std::string& name) {
  for (const DtypeInfo& d : kDtypes)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

std::optional<DType> to_tensor_dtype(Dtype t) {
  switch (t) {
    case Dtype::F32: return DType::F32;
    case Dtype::F16: return DType::F16;
    case Dtype::BF16: return DType::BF16;
    case Dtype::F64: return DType::F64;
    case Dtype::I8: return DType::I8;
    case Dtype::U8: return DType::U8;
    case Dtype::I16: return DType::I16;
    case Dtype::I32: return DType::I32;
    case Dtype::I64: return DType::I64;
    case Dtype::U32: return DType::U32;
    case Dtype::BOOL: case Dtype::F8_E5M2: case Dtype::F8_E4M3: case Dtype::U16: case Dtype::U64: return std::nullopt;
  }
  return std::nullopt;
}

Dtype from_tensor_dtype(DType t) {
  switch (t) {
    case DType::F32: return Dtype::F32;
    case DType::F16: return Dtype::F16;
    case DType::BF16: return Dtype::BF16;
    case DType::F64: return Dtype::F64;
    case DType::I8: return Dtype::I8;
    case DType::U8: return Dtype::U8;
    case DType::I16: return Dtype::I16;
    case DType::I32: return Dtype::I32;
    case DType::I64: return Dtype::I64;
    case DType::U32: return Dtype::U32;
  }
  QF_ASSERT(false);
}

// ---- reader ------------------------------------------------------------------------------------

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
  QF_CHECK(size >= 8, file, ": truncated: ", size, " bytes, too short for the 8-byte safetensors header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  QF_CHECK(header_len <= size - 8, file, ": header length ", header_len, " is larger than the rest of the file (",
           size - 8, " bytes)");
  QF_CHECK(header_len <= kMaxHeaderBytes, file, ": header length ", header_len, " exceeds the ", kMaxHeaderBytes,
           "-byte limit");
  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_len);
  const nlohmann::json header = json_text::parse(text, file + " (header)");
  QF_CHECK(header.is_object(), file, ": the header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      QF_CHECK(entry.is_object(), file, ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        QF_CHECK(v.is_string(), file, ": __metadata__[\"", k, "\"] is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = str(file, ": tensor '", name, "'");
    QF_CHECK(entry.is_object(), what, " is not described by a JSON object");
    TensorEntry t;
    t.name = name;
    const std::string dtype = json_text::get_string(entry, "dtype", what);
    const std::optional<Dtype> dt = parse_dtype(dtype);
    QF_CHECK(dt, what, " has unknown dtype \"", dtype, "\"");
    t.dtype = *dt;
    const nlohmann::json* shape = json_text::find(entry, "shape");
    QF_CHECK(shape && shape->is_array(), what, " has no \"shape\" array");
    for (const auto& d : *shape) {
      const uint64_t dim = json_text::as_uint(d, "a dimension of \"shape\"", what);
      QF_CHECK(dim <= uint64_t(std::numeric_limits<int64_t>::max()), what, " has dimension ", dim, ", too large");
      t.shape.push_back(int64_t(dim));
    }
    const nlohmann::json* offsets = json_text::find(entry, "data_offsets");
    QF_CHECK(offsets && offsets->is_array() && offsets->size() == 2, what, " needs \"data_offsets\": [begin, end]");
    t.begin = json_text::as_uint((*offsets)[0], "data_offsets[0]", what);
    t.end = json_text::as_uint((*offsets)[1], "data_offsets[1]", what);
    QF_CHECK(t.begin <= t.end, what, " has data_offsets [", t.begin, ", ", t.end, "] with begin after end");
    QF_CHECK(t.end <= data_size, what, " (bytes ", t.begin, "..", t.end, ") extends past the end of the data region (",
             data_size, " bytes)");
    // Elements times element size, overflow-checked, must equal the byte range.
    uint64_t needed = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      QF_CHECK(d == 0 || needed <= std::numeric_limits<uint64_t>::max() / uint64_t(d), what, " has shape ",
               shape_str(t.shape), " whose size overflows 64 bits");
      needed *= uint64_t(d);
    }
    QF_CHECK(needed == t.end - t.begin, what, ": shape ", shape_str(t.shape), " of ", dtype, " needs ", needed,
             " bytes but data_offsets span ", t.end - t.begin);
    t.data = bytes + data_start + t.begin;
    index_[name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  std::vector<const TensorEntry*> by_offset;
  for (const TensorEntry& t : tensors_)
    if (t.nbytes() > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorEntry& a = *by_offset[i - 1];
    const TensorEntry& b = *by_offset[i];
    QF_CHECK(a.end <= b.begin, file, ": tensors '", a.name, "' (bytes ", a.begin, "..", a.end, ") and '", b.name,
             "' (bytes ", b.begin, "..", b.end, ") overlap");
  }
}

const TensorEntry* File::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor File::tensor(const std::string& name) const {
  const TensorEntry* t = find(name);
  QF_CHECK(t, path(), ": no tensor named '", name, "'");
  return tensor(*t);
}

Tensor File::tensor(const TensorEntry& t) const {
  const std::optional<DType> dt = to_tensor_dtype(t.dtype);
  QF_CHECK(dt, path(), ": tensor '", t.name, "' has dtype ", dtype_name(t.dtype),
           ", which a qforge Tensor cannot hold (read its raw bytes instead)");
  if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) == 0)
    return Tensor::borrow(*dt, t.shape, t.data, bytes_.keepalive);
  Tensor out = Tensor::empty(*dt, t.shape);
  if (t.nbytes()) std::memcpy(out.raw_mut(), t.data, t.nbytes());
  return out;
}

// ---- writer --------------------------------------------------------------------------------

TensorToWrite TensorToWrite::from(std::string name, const Tensor& t) {
  return TensorToWrite{std::move(name), from_tensor_dtype(t.dtype()), t.shape(), t.raw()};
}

namespace {

[[noreturn]] void io_fail(const std::string& path, const char* what) {
  const int e = errno;
  fail(path, ": ", what, ": ", std::strerror(e));
}

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) io_fail(path, "write failed");
    p += w;
    n -= size_t(w);
  }
}

// The temporary file: removed on destruction unless committed.
class TempFile {
 public:
  explicit TempFile(const std::string& final_path) : path_(final_path + ".tmp-XXXXXX") {
    fd_ = ::mkstemp(path_.data());
    if (fd_ < 0) io_fail(path_, "cannot create the temporary file");
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  void close_checked() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) io_fail(path_, "close failed");
  }
  void commit() { committed_ = true; }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) io_fail(dir, "cannot open the folder to sync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) io_fail(dir, "fsync of the folder failed");
}

}  // namespace

void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata, const WriteOptions& options) {
  // Layout: largest elements first, so every tensor starts at a multiple of its element size.
  std::vector<const TensorToWrite*> order;
  for (const TensorToWrite& t : tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(),
                   [](auto* a, auto* b) { return dtype_size(a->dtype) > dtype_size(b->dtype); });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::vector<uint64_t> nbytes;
  uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    QF_CHECK(t->name != kMetadataKey && !t->name.empty(), path, ": invalid tensor name '", t->name, "'");
    QF_CHECK(!header.contains(t->name), path, ": tensor '", t->name, "' given twice");
    const uint64_t bytes = uint64_t(shape_numel(t->shape)) * dtype_size(t->dtype);
    QF_CHECK(bytes == 0 || t->data, path, ": tensor '", t->name, "' has no data");
    header[t->name] = {{"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + bytes}}};
    nbytes.push_back(bytes);
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    fail(path, ": tensor names and metadata must be valid UTF-8");
  }
  // Spaces after the JSON pad the header so the data region starts at a multiple of 8 bytes.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  TempFile tmp(path);
  // mkstemp creates the file readable by its owner only; a checkpoint is an ordinary file.
  if (::fchmod(tmp.fd(), 0644) != 0) io_fail(tmp.path(), "chmod failed");
  write_all(tmp.fd(), len_bytes, 8, tmp.path());
  write_all(tmp.fd(), text.data(), text.size(), tmp.path());
  for (size_t i = 0; i < order.size(); ++i) {
    write_all(tmp.fd(), order[i]->data, nbytes[i], tmp.path());
    if (options.on_tensor_written) options.on_tensor_written(i + 1, order.size());
  }
  if (::fsync(tmp.fd()) != 0) io_fail(tmp.path(), "fsync failed");
  tmp.close_checked();
  if (::rename(tmp.path().c_str(), path.c_str()) != 0) io_fail(path, "cannot rename the temporary file into place");
  tmp.commit();
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  fsync_directory(parent.empty() ? "." : parent.string());
}

}  // namespace qf::safetensors
