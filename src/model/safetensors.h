/*
 * safetensors.h -- memory-mapped safetensors files, single and sharded.
 *
 * Owns: struct pl_safetensors, a read-only view of every tensor of a model
 * directory: model.safetensors, or the shards listed in
 * model.safetensors.index.json. Files are mmap'ed; tensor data pointers point
 * into the maps and stay valid until pl_safetensors_free.
 * Invariants after a successful open (all checked, never assumed):
 *   - each header is valid JSON of at most PL_SAFETENSORS_MAX_HEADER bytes;
 *   - every tensor has a known dtype, a shape of at most 8 non-negative dims
 *     whose element count times the dtype size equals end - begin without
 *     overflow, and [begin, end) lies inside the file's data section;
 *   - tensors of one file do not overlap; names are unique across shards.
 * Every error names the file and, where one is at fault, the tensor.
 */
#ifndef PL_MODEL_SAFETENSORS_H
#define PL_MODEL_SAFETENSORS_H

#include "util/dtype.h"
#include "util/err.h"

#include <stdint.h>

#define PL_SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)
#define PL_SAFETENSORS_MAX_DIMS 8

struct pl_tensor_info {
    const char *name;       /* owned by the pl_safetensors */
    enum pl_dtype dtype;    /* F32, F16, BF16; I32, I64, F8_E4M3, I8, U8 (quantized
                               checkpoints' packed weights, zeros, indices, fp8 weights);
                               others are refused at open */
    int n_dims;
    int64_t shape[PL_SAFETENSORS_MAX_DIMS];
    int64_t n_elements;
    const void *data;       /* into the mmap; n_bytes long */
    size_t n_bytes;
    const char *file;       /* the shard file's path, for messages */
};

struct pl_safetensors;

/* Opens model_dir's safetensors (sharded index first, else model.safetensors). */
pl_status pl_safetensors_open_dir(const char *model_dir, struct pl_safetensors **out,
                                  struct pl_err *err);

/* Opens one .safetensors file. */
pl_status pl_safetensors_open_file(const char *path, struct pl_safetensors **out,
                                   struct pl_err *err);

/* Parses and validates a header in memory against a data section of data_len
 * bytes (used by open and by the fuzz target). On success *out lists tensors
 * whose data pointers are relative to `data` (may be NULL for validation only). */
pl_status pl_safetensors_parse_header(const char *header, size_t header_len,
                                      const void *data, uint64_t data_len,
                                      const char *file_name, struct pl_safetensors **out,
                                      struct pl_err *err);

void pl_safetensors_free(struct pl_safetensors *st);

int pl_safetensors_count(const struct pl_safetensors *st);
const struct pl_tensor_info *pl_safetensors_at(const struct pl_safetensors *st, int i);

/* Looks a tensor up by name; NULL when absent. */
const struct pl_tensor_info *pl_safetensors_find(const struct pl_safetensors *st,
                                                 const char *name);

#endif
