#include <gtest/gtest.h>

#include "core/tensor.h"

namespace qf {

TEST(Tensor, OwnedIsWritableAndAligned) {
  Tensor t = Tensor::zeros(DType::F32, {3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 60u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  t.data_mut<float>()[14] = 2.5f;
  EXPECT_EQ(t.clone().data<float>()[14], 2.5f);
  EXPECT_EQ(t.data<float>()[0], 0.0f);
}

TEST(Tensor, BorrowedIsReadOnly) {
  static const float buf[4] = {1, 2, 3, 4};
  Tensor t = Tensor::borrow(DType::F32, {2, 2}, buf, nullptr);
  EXPECT_EQ(t.data<float>()[3], 4.0f);
  EXPECT_THROW(t.data_mut<float>(), Error);
  EXPECT_EQ(t.clone().data_mut<float>()[2], 3.0f);
}

TEST(Tensor, WrongElementTypeThrows) {
  Tensor t = Tensor::zeros(DType::BF16, {4});
  EXPECT_THROW(t.data<float>(), Error);
  EXPECT_NO_THROW(t.data<uint16_t>());
}

TEST(Tensor, ReshapeChecksCount) {
  Tensor t = Tensor::zeros(DType::F32, {2, 6});
  EXPECT_EQ(t.reshape({3, 4}).dim(0), 3);
  EXPECT_THROW(t.reshape({5, 2}), Error);
}

TEST(Tensor, ShapeOverflowAndNegativeAreErrors) {
  EXPECT_THROW(shape_numel({-1, 4}), Error);
  EXPECT_THROW(shape_numel({int64_t(1) << 40, int64_t(1) << 40}), Error);
}

}  // namespace qf
