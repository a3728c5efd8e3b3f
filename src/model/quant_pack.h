/*
 * quant_pack.h -- the producer side of the quantized formats: pagellm's own
 * quantized test models, without Python.
 *
 * Owns: the named test formats (each a quantization_config text as its
 * producer writes it, parsed by model/quant.c like any checkpoint's), a
 * round-to-nearest quantizer + packer per format (the layouts of quant_dequant.c,
 * written the producer's way: AutoAWQ's nibble order, GPTQ's input-dim packing
 * and zero - 1 (v1), compressed-tensors' offset storage, e4m3 with fp32
 * scales), a small safetensors writer, and pl_quant_write_model, which turns a
 * tiny preset (model/tiny_model.h) into a quantized model directory plus,
 * optionally, the dense directory of its DEQUANTIZED weights (the reference:
 * the quantized model must compute exactly what this dense model computes).
 * Invariants: the output is a pure function of (preset, format); the dense
 * directory holds, for every quantized weight, exactly the fp32 values the
 * packed tensors dequantize to.
 */
#ifndef PL_MODEL_QUANT_PACK_H
#define PL_MODEL_QUANT_PACK_H

#include "model/quant.h"

/* One tensor to write (data owned by the list). */
struct pl_qt_tensor {
    char name[200];
    enum pl_dtype dtype;
    int n_dims;            /* 0 (a scalar), 1 or 2 */
    int64_t shape[2];
    void *data;
    size_t n_bytes;
};

struct pl_qt_list {
    struct pl_qt_tensor *t;
    int n, cap;
};

/* Appends a zeroed tensor (NULL when out of memory). */
struct pl_qt_tensor *pl_qt_add(struct pl_qt_list *l, const char *name, enum pl_dtype dtype,
                               int n_dims, int64_t d0, int64_t d1);
void pl_qt_list_free(struct pl_qt_list *l);

/* Writes the list as one safetensors file (names sorted, data 8-byte aligned). */
pl_status pl_qt_write_safetensors(const char *path, struct pl_qt_list *l, struct pl_err *err);

/* Quantizes w[n, k] (round to nearest, scales from each group's range) into the
 * checkpoint tensors of `module` under *q, appended to out, and writes what they
 * dequantize to into deq[n * k]. scale_dtype: the dtype of compressed-tensors'
 * weight_scale (the model's); AWQ and GPTQ scales are fp16, FP8 scales fp32. seed
 * picks the act-order permutation. */
pl_status pl_quant_pack(const struct pl_quant_config *q, const char *module, const float *w,
                        int64_t n, int64_t k, enum pl_dtype scale_dtype, uint64_t seed,
                        struct pl_qt_list *out, float *deq, struct pl_err *err);

/* The test formats' names ("awq_g128", "gptq_g32_act", ...), in table order. */
const char *const *pl_quant_format_list(int *n);
/* A format's quantization_config JSON text (NULL when unknown). */
const char *pl_quant_format_config(const char *format);

/* Writes preset `preset` quantized as `format` into out_dir (config.json with the
 * quantization_config, generation_config.json, one model.safetensors) and, when
 * dequant_dir is not NULL, the same model with every quantized weight replaced by its
 * fp32 dequantized values there. */
pl_status pl_quant_write_model(const char *preset, const char *format, const char *out_dir,
                               const char *dequant_dir, struct pl_err *err);

#endif
