// Device memory, streams and events of the CUDA backend.
//
// Memory is plain cudaMalloc: no managed (unified) memory, whose page migration would make
// timings and out-of-memory behaviour depend on the driver rather than on us. Everything a model
// needs is carved out of a DeviceArena (one allocation, bump-allocated), so "does it fit" is one
// question asked once, and a failure says how much was needed and how much was free.
//
// Every owner here is move-only RAII; every CUDA call is checked (cuda_check.h).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qf::cuda {

// The facts kernels and the benchmark size themselves by, read off the device once.
struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  size_t l2_bytes = 0;
  size_t total_bytes = 0;
  size_t smem_per_block_optin = 0;  // shared memory a block may have after cudaFuncSetAttribute
  int max_threads_per_sm = 0;
};
// The current device's facts (cached per ordinal).
const DeviceInfo& device_info();

struct MemoryInfo {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};
MemoryInfo device_memory();

// How sizes appear in messages: "1.50 GiB" from 1 GiB up, "12.25 MiB" below, "100 bytes" below 1 MiB.
std::string size_str(size_t bytes);

// Fails with "<what> needs X GiB, Y GiB free of Z GiB on <device>" unless `bytes` fit in the
// device's free memory now. Call it before a large job rather than half-way through one.
void require_device_memory(size_t bytes, std::string_view what);

// One cudaMalloc allocation, freed when the owner goes away.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Throws qf::Error naming `what`, the size, and the free/total memory when it does not fit.
  DeviceBuffer(size_t bytes, std::string_view what);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  void reset();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A bump allocator over one DeviceBuffer. Allocations are aligned (default 256 bytes: the
// alignment cuBLASLt's heuristics assume by default, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*, and a
// multiple of every vector width our kernels load), never freed one by one: the model's weights
// live as long as the arena, and scratch space is released LIFO with mark()/release_to().
class DeviceArena {
 public:
  static constexpr size_t kDefaultAlign = 256;

  DeviceArena() = default;
  DeviceArena(size_t capacity, std::string_view what);

  // Throws qf::Error "arena '<name>' cannot fit <what>: needs X GiB, Y GiB left of Z GiB".
  void* alloc(size_t bytes, std::string_view what, size_t align = kDefaultAlign);
  template <typename T>
  T* alloc_n(size_t count, std::string_view what, size_t align = kDefaultAlign) {
    return static_cast<T*>(alloc(count * sizeof(T), what, align));
  }

  size_t capacity() const { return buffer_.size(); }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  size_t remaining() const { return capacity() - used_; }

  size_t mark() const { return used_; }
  // Frees every allocation made after `mark` was taken.
  void release_to(size_t mark);
  void reset() { release_to(0); }

 private:
  DeviceBuffer buffer_;
  std::string name_;
  size_t used_ = 0;
  size_t peak_ = 0;
};

// A non-blocking stream (it does not synchronise with the legacy default stream).
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(Stream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return s_; }
  operator cudaStream_t() const { return s_; }
  void synchronize() const;

 private:
  cudaStream_t s_ = nullptr;
};

// A timing event.
class Event {
 public:
  Event();
  ~Event();
  Event(Event&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t stream);
  void synchronize() const;
  // Milliseconds from `start` to this event; both must have completed.
  float elapsed_ms_since(const Event& start) const;

 private:
  cudaEvent_t e_ = nullptr;
};

// Synchronous copies (they wait for `stream` and the copy).
void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream);
void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// Writes the 16-bit `pattern` into `count` consecutive 16-bit elements. Tests poison
// outputs with a NaN pattern this way so that an element a kernel never wrote stands out.
void fill_u16(void* dst, uint16_t pattern, size_t count, cudaStream_t stream);

// Keeps the stream busy for about `ns` nanoseconds (one thread spinning on the global timer).
// The benchmark enqueues this before a batch of timed launches: with work queued, each start
// event is stamped when the previous launch ends, not while the GPU idles waiting for the host
// to submit the kernel after it, which would add the host's launch latency to the measurement.
void device_sleep(cudaStream_t stream, uint64_t ns);

}  // namespace qf::cuda
