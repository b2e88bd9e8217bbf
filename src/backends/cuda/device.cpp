#include "backends/cuda/device.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <vector>

#include "backends/cuda/cuda_check.h"

namespace qf::cuda {

namespace {

int current_device() {
  int dev = 0;
  QF_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

// "needs X GiB, Y GiB free of Z GiB on device 0 (NVIDIA H100 80GB HBM3)"
std::string memory_shortfall(size_t bytes) {
  MemoryInfo mem = device_memory();
  const DeviceInfo& info = device_info();
  return str("needs ", size_str(bytes), ", ", size_str(mem.free_bytes), " free of ", size_str(mem.total_bytes),
             " on device ", info.ordinal, " (", info.name, ")");
}

}  // namespace

const DeviceInfo& device_info() {
  static std::mutex mu;
  static std::vector<std::unique_ptr<DeviceInfo>> cache;
  std::lock_guard<std::mutex> lock(mu);
  const int dev = current_device();
  if (static_cast<int>(cache.size()) <= dev) cache.resize(dev + 1);
  if (!cache[dev]) {
    cudaDeviceProp p{};
    QF_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    auto info = std::make_unique<DeviceInfo>();
    info->ordinal = dev;
    info->name = p.name;
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->sm_count = p.multiProcessorCount;
    info->l2_bytes = static_cast<size_t>(p.l2CacheSize);
    info->total_bytes = p.totalGlobalMem;
    info->smem_per_block_optin = p.sharedMemPerBlockOptin;
    info->max_threads_per_sm = p.maxThreadsPerMultiProcessor;
    cache[dev] = std::move(info);
  }
  return *cache[dev];
}

MemoryInfo device_memory() {
  MemoryInfo m;
  QF_CUDA_CHECK(cudaMemGetInfo(&m.free_bytes, &m.total_bytes));
  return m;
}

std::string size_str(size_t bytes) {
  constexpr double kMiB = 1024.0 * 1024.0, kGiB = 1024.0 * kMiB;
  char buf[48];
  const double b = static_cast<double>(bytes);
  if (b >= kGiB) std::snprintf(buf, sizeof buf, "%.2f GiB", b / kGiB);
  else if (b >= kMiB) std::snprintf(buf, sizeof buf, "%.2f MiB", b / kMiB);
  else std::snprintf(buf, sizeof buf, "%zu bytes", bytes);
  return buf;
}

void require_device_memory(size_t bytes, std::string_view what) {
  if (bytes > device_memory().free_bytes) fail(what, " ", memory_shortfall(bytes));
}

// ---- DeviceBuffer -------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t bytes, std::string_view what) {
  if (bytes == 0) return;
  cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // reset the (non-sticky) error so later checked calls do not see it
    ptr_ = nullptr;
    fail("cannot allocate ", what, " on the GPU: it ", memory_shortfall(bytes));
  }
  QF_CUDA_CHECK(err);
  bytes_ = bytes;
}

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::reset() {
  // cudaFree in a destructor must not throw; a failure here means the context is already
  // broken, which the next checked call reports.
  if (ptr_) (void)cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

// ---- DeviceArena --------------------------------------------------------------------------

DeviceArena::DeviceArena(size_t capacity, std::string_view what)
    : buffer_(capacity, str("arena '", what, "'")), name_(what) {}

void* DeviceArena::alloc(size_t bytes, std::string_view what, size_t align) {
  QF_CHECK(align != 0 && (align & (align - 1)) == 0, "arena '", name_, "': alignment ", align,
           " for ", what, " is not a power of two");
  const size_t start = (used_ + align - 1) & ~(align - 1);
  if (start > capacity() || bytes > capacity() - start)
    fail("arena '", name_, "' cannot fit ", what, ": needs ", size_str(bytes), ", ",
         size_str(capacity() - std::min(start, capacity())), " left of ", size_str(capacity()));
  used_ = start + bytes;
  if (used_ > peak_) peak_ = used_;
  return static_cast<char*>(buffer_.data()) + start;
}

void DeviceArena::release_to(size_t mark) {
  QF_CHECK(mark <= used_, "arena '", name_, "': release_to(", mark, ") is past the top (", used_, ")");
  used_ = mark;
}

// ---- Stream / Event -----------------------------------------------------------------------

Stream::Stream() { QF_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (s_) (void)cudaStreamDestroy(s_);
}
Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    if (s_) (void)cudaStreamDestroy(s_);
    s_ = o.s_;
    o.s_ = nullptr;
  }
  return *this;
}
void Stream::synchronize() const { QF_CUDA_CHECK(cudaStreamSynchronize(s_)); }

Event::Event() { QF_CUDA_CHECK(cudaEventCreate(&e_)); }
Event::~Event() {
  if (e_) (void)cudaEventDestroy(e_);
}
Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (e_) (void)cudaEventDestroy(e_);
    e_ = o.e_;
    o.e_ = nullptr;
  }
  return *this;
}
void Event::record(cudaStream_t stream) { QF_CUDA_CHECK(cudaEventRecord(e_, stream)); }
void Event::synchronize() const { QF_CUDA_CHECK(cudaEventSynchronize(e_)); }
float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0.f;
  QF_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
  return ms;
}

// ---- copies -------------------------------------------------------------------------------

void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  QF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  QF_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  QF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  QF_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace qf::cuda
