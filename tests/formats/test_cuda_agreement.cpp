// qforge's codecs against CUDA's own conversions (the host code paths of cuda_fp16.h,
// cuda_bf16.h, cuda_fp8.h, cuda_fp6.h, cuda_fp4.h, CUDA 13). Plain host C++: these headers compile
// with g++ and no GPU. Built only when the CUDA toolkit headers are found.
//
// What agrees, bit for bit: every code's decoded value; encode of every midpoint between
// neighbouring values and the floats beside it, of a strided walk over all F32 bit patterns, of
// +-0, +-inf and NaNs; for FP8 in both __NV_SATFINITE and __NV_NOSAT. FP6/FP4 are encoded with
// cudaRoundNearest (the mode of cvt.rn.satfinite, the instruction the device path uses).
// Known and intended difference: none. (F16/BF16/FP8 NaN decoding: CUDA returns its canonical
// NaN, qforge keeps sign and payload; only NaN-ness is compared there.)
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp4.h>
#include <cuda_fp6.h>
#include <cuda_fp8.h>

#include <functional>

#include "float_reference.h"
#include "formats/bf16.h"
#include "formats/fp16.h"
#include "formats/fp8.h"
#include "formats/fpx.h"

namespace qf {
namespace {

using test::bits_of;

float half_raw_to_float(__half_raw h) { return __half2float(__half(h)); }

// Inputs: the sweep, NaNs, and every midpoint of the format's values (from the reference model).
std::vector<float> inputs_for(const test::RefEncoder& ref) {
  std::vector<float> v = ref.critical_inputs();
  for (float x : test::sweep_inputs(1021)) v.push_back(x);
  for (float x : test::nan_inputs()) v.push_back(x);
  return v;
}

void compare_encode(const char* name, const std::vector<float>& inputs, const std::function<uint32_t(float)>& ours,
                    const std::function<uint32_t(float)>& cuda) {
  int64_t mismatches = 0;
  for (float x : inputs) {
    const uint32_t a = ours(x), b = cuda(x);
    if (a != b && mismatches++ < 8)
      ADD_FAILURE() << name << ": encode(0x" << std::hex << bits_of(x) << " = " << x << ") qforge 0x" << a << ", CUDA 0x" << b;
  }
  EXPECT_EQ(mismatches, 0) << name << " over " << inputs.size() << " inputs";
}

void compare_decode(const char* name, uint32_t codes, const std::function<float(uint32_t)>& ours,
                    const std::function<float(uint32_t)>& cuda) {
  for (uint32_t c = 0; c < codes; ++c) {
    const float a = ours(c), b = cuda(c);
    if (std::isnan(a) || std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a) && std::isnan(b)) << name << " code 0x" << std::hex << c;
      continue;
    }
    EXPECT_EQ(bits_of(a), bits_of(b)) << name << " code 0x" << std::hex << c << ": qforge " << a << ", CUDA " << b;
  }
}

TEST(CudaAgreement, Bf16) {
  const test::RefEncoder ref({"bf16", 8, 7, 127, test::Specials::ieee}, test::OnOverflow::to_inf);
  compare_decode("bf16", 1u << 16, [](uint32_t c) { return bf16_decode(uint16_t(c)); }, [](uint32_t c) {
    __nv_bfloat16_raw r;
    r.x = uint16_t(c);
    return __bfloat162float(__nv_bfloat16(r));
  });
  compare_encode("bf16", inputs_for(ref), [](float x) { return uint32_t(bf16_encode(x)); },
                 [](float x) { return uint32_t(__nv_bfloat16_raw(__float2bfloat16_rn(x)).x); });
}

TEST(CudaAgreement, F16) {
  const test::RefEncoder ref({"f16", 5, 10, 15, test::Specials::ieee}, test::OnOverflow::to_inf);
  compare_decode("f16", 1u << 16, [](uint32_t c) { return f16_decode(uint16_t(c)); }, [](uint32_t c) {
    __half_raw r;
    r.x = uint16_t(c);
    return half_raw_to_float(r);
  });
  compare_encode("f16", inputs_for(ref), [](float x) { return uint32_t(f16_encode(x)); },
                 [](float x) { return uint32_t(__half_raw(__float2half_rn(x)).x); });
}

TEST(CudaAgreement, Fp8) {
  struct Case {
    const char* name;
    __nv_fp8_interpretation_t kind;
    test::RefFormat ref;
    uint8_t (*encode)(float, Fp8Saturation);
    float (*decode)(uint8_t);
  };
  const Case cases[] = {
      {"fp8_e4m3", __NV_E4M3, {"e4m3", 4, 3, 7, test::Specials::e4m3fn}, fp8_e4m3_encode, fp8_e4m3_decode},
      {"fp8_e5m2", __NV_E5M2, {"e5m2", 5, 2, 15, test::Specials::ieee}, fp8_e5m2_encode, fp8_e5m2_decode},
  };
  for (const Case& c : cases) {
    compare_decode(c.name, 256, [&](uint32_t code) { return c.decode(uint8_t(code)); },
                   [&](uint32_t code) { return half_raw_to_float(__nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(code), c.kind)); });
    const std::vector<float> inputs = inputs_for(test::RefEncoder(c.ref, test::OnOverflow::to_max));
    compare_encode(c.name, inputs, [&](float x) { return uint32_t(c.encode(x, Fp8Saturation::satfinite)); },
                   [&](float x) { return uint32_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, c.kind)); });
    compare_encode(c.name, inputs, [&](float x) { return uint32_t(c.encode(x, Fp8Saturation::nosat)); },
                   [&](float x) { return uint32_t(__nv_cvt_float_to_fp8(x, __NV_NOSAT, c.kind)); });
  }
  // The C++ types' constructors (what CUDA code writes as __nv_fp8_e4m3(x)) saturate.
  EXPECT_EQ(__nv_fp8_e4m3(1e6f).__x, fp8_e4m3_encode(1e6f));
  EXPECT_EQ(__nv_fp8_e5m2(-1e6f).__x, fp8_e5m2_encode(-1e6f));
}

TEST(CudaAgreement, Fp6AndFp4) {
  struct Case {
    const char* name;
    FpxType type;
    std::function<uint32_t(float)> cuda_encode;
    std::function<float(uint32_t)> cuda_decode;
  };
  const Case cases[] = {
      {"fp6_e3m2", kFp6E3M2, [](float x) { return uint32_t(__nv_cvt_float_to_fp6(x, __NV_E3M2, cudaRoundNearest)); },
       [](uint32_t c) { return half_raw_to_float(__nv_cvt_fp6_to_halfraw(__nv_fp6_storage_t(c), __NV_E3M2)); }},
      {"fp6_e2m3", kFp6E2M3, [](float x) { return uint32_t(__nv_cvt_float_to_fp6(x, __NV_E2M3, cudaRoundNearest)); },
       [](uint32_t c) { return half_raw_to_float(__nv_cvt_fp6_to_halfraw(__nv_fp6_storage_t(c), __NV_E2M3)); }},
      {"fp4_e2m1", kFp4E2M1, [](float x) { return uint32_t(__nv_cvt_float_to_fp4(x, __NV_E2M1, cudaRoundNearest)); },
       [](uint32_t c) { return half_raw_to_float(__nv_cvt_fp4_to_halfraw(__nv_fp4_storage_t(c), __NV_E2M1)); }},
  };
  for (const Case& c : cases) {
    const FpxType t = c.type;
    compare_decode(c.name, 1u << t.bits(), [t](uint32_t code) { return fpx_decode(uint8_t(code), t); }, c.cuda_decode);
    const test::RefEncoder ref({c.name, t.exp_bits, t.man_bits, t.bias(), test::Specials::all_finite},
                               test::OnOverflow::to_max);
    compare_encode(c.name, inputs_for(ref), [t](float x) { return uint32_t(fpx_encode(x, t)); }, c.cuda_encode);
  }
  EXPECT_EQ(__nv_fp6_e3m2(100.0f).__x, fpx_encode(100.0f, kFp6E3M2));
  EXPECT_EQ(__nv_fp4_e2m1(-5.0f).__x, fpx_encode(-5.0f, kFp4E2M1));
}

}  // namespace
}  // namespace qf
