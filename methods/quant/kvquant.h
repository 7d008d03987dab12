// KVQuant's pieces that tests check on their own (methods/quant/kvquant.cpp has the method).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace kvb {

// One layer's offline calibration: keys' per-channel normalization (x - zero) / scale, so that
// the calibration keys inside the outlier thresholds fall in [-1, 1], and the non-uniform
// datatypes (2^bits levels in [-1, 1], ascending) of normalized keys and of normalized values.
struct KVQuantLayerCalibration {
  torch::Tensor key_zero, key_scale;             // [H_kv, D] fp32 (scale > 0)
  torch::Tensor key_codebook, value_codebook;    // [2^bits] fp32 ascending
};

// Outlier elements kept per vector of `d` elements: ceil(fraction x d) (0 when fraction is 0),
// computed in exact decimal terms (0.01 x 100 is 1, not 2).
int64_t kvquant_outliers_per_vector(double fraction, int64_t d);

// Sensitivity-weighted 1-D k-means (Lloyd, weighted-quantile start, `iters` rounds): `levels`
// centroids of x [N] fp32 under weights w [N] fp32 >= 0 (undefined: all 1), ascending.
torch::Tensor weighted_kmeans_1d(const torch::Tensor& x, const torch::Tensor& w, int64_t levels,
                                 int iters = 40);

// Index of the nearest level of an ascending codebook [L] for every element of u (uint8).
torch::Tensor nearest_level(const torch::Tensor& u, const torch::Tensor& codebook);

// Codes [..., D] uint8 (each < 2^bits, D % 8 == 0) <-> packed [..., D * bits / 8] uint8: each
// run of 8 codes is `bits` bytes, code i of the run at bit i * bits of their little-endian word.
torch::Tensor kvquant_pack(const torch::Tensor& codes, int bits);
torch::Tensor kvquant_unpack(const torch::Tensor& packed, int bits, int64_t d);

// A layer's calibration from its keys and values [N, H_kv, D] fp32 (N calibration tokens), the
// per-(KV head, channel) mean squared query that reads each key channel qsq [H_kv, D] fp32, the
// datatype's bits and the outlier fraction (see kvquant.cpp: thresholds, weights).
KVQuantLayerCalibration kvquant_calibrate_layer(const torch::Tensor& keys,
                                                const torch::Tensor& values,
                                                const torch::Tensor& qsq, int bits,
                                                double outliers);

}  // namespace kvb
