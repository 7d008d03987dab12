// CUDA kernels on raw device pointers (library kvbench_cuda: needs only the CUDA runtime, so a
// CPU-only libtorch still gets GPU kernels built, tested and benchmarked). Plain C++ header.
//
// Conventions are those of kernels/cpu/quant_kernels.h (packed codes, first code in the lowest
// bits; fp16 scale/zero; value = code * scale + zero in fp32).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvb::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
std::string_view last_error();
// The CUDA runtime this library was linked with: 1000 * major + 10 * minor (12040 = 12.4); needs
// no device. 0 when it cannot be queried.
int runtime_version();

// Device memory helpers for tests and benchmarks. Throw std::runtime_error on failure.
void* device_alloc(size_t bytes);
void device_free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void synchronize();

// Token-wise groups: rows of d channels, `group` consecutive channels share scale/zero.
//   codes [rows, d*bits/8] uint8, scale/zero [rows, d/group] fp16 bits, out [rows, d] fp32.
void dequantize_rows(const uint8_t* codes, const uint16_t* scale, const uint16_t* zero,
                     int64_t rows, int64_t d, int bits, int64_t group, float* out);

// Elapsed milliseconds of `iters` launches of dequantize_rows, timed with CUDA events.
float time_dequantize_rows(const uint8_t* codes, const uint16_t* scale, const uint16_t* zero,
                           int64_t rows, int64_t d, int bits, int64_t group, float* out, int iters);
// Elapsed milliseconds of `iters` device-to-device copies of `bytes` (the bandwidth reference).
float time_device_copy(void* dst, const void* src, size_t bytes, int iters);

}  // namespace kvb::cuda
