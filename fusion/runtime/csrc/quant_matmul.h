// Products over weights kept in GGUF blocks (quant_matmul.cpp); registered by cpu_decode.cpp.
#pragma once
#include <torch/extension.h>

#include <vector>

torch::Tensor quant_matmul(const torch::Tensor& x, const std::vector<torch::Tensor>& raws,
                           const std::vector<int64_t>& kinds, const std::vector<int64_t>& rows,
                           c10::optional<torch::Tensor> bias, c10::optional<torch::Tensor> residual);
torch::Tensor dequantize_rows(const torch::Tensor& raw, int64_t kind, int64_t n, int64_t cols, const torch::Tensor& ids);
