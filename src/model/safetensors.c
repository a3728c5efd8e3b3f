/*
 * safetensors.c -- memory-mapped safetensors files, single and sharded (see safetensors.h).
 *
 * Format (https://github.com/huggingface/safetensors, "Format" section):
 *   [8 bytes: N, little-endian u64][N bytes: JSON header][data section]
 *   header = { "<tensor name>": {"dtype": "BF16", "shape": [d0, ...],
 *                                "data_offsets": [begin, end]}, ...,
 *              "__metadata__": {"<key>": "<string>", ...} (optional) }
 *   begin/end are byte offsets relative to the start of the data section.
 *
 * Owns: every mapped file (path, map, length) and every tensor's description.
 * Invariants:
 *   1. A tensor's data pointer lies inside its own file's map, [data, data+n_bytes)
 *      is inside that file's data section, and no two non-empty tensors of one
 *      file share a byte (checked by sorting each file's ranges by begin).
 *   2. After a successful open, tensors[] is sorted by name (strcmp) and names
 *      are unique across all files, so lookup is a binary search.
 *   3. Every failure leaves nothing allocated or mapped: the object being built
 *      is complete enough at every step for pl_safetensors_free to undo it.
 * Files are mapped read-only and never copied: tensor data pointers stay valid
 * until pl_safetensors_free.
 */
#include "model/safetensors.h"

#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define MAX_INDEX_BYTES (64u * 1024u * 1024u)

struct st_file {
    char *path;     /* as given (joined with the model dir for shards) */
    void *map;      /* NULL for headers parsed from memory */
    size_t map_len;
};

struct pl_safetensors {
    struct pl_tensor_info *tensors; /* [n_tensors]; sorted by name once opened */
    int n_tensors, cap_tensors;
    struct st_file *files;          /* [n_files] */
    int n_files, cap_files;
};

/* One tensor's byte range in its file, for the overlap check. */
struct range {
    uint64_t begin, end;
    const char *name;
};

/* The dtypes the safetensors format defines. Known-but-unloadable ones are
 * refused as unsupported; anything else is a malformed header. */
static const char *const known_other_dtypes[] = {
    "BOOL", "I16", "U16", "U32", "U64", "F64", "C64",
    "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
};

static struct pl_safetensors *st_new(void) { return calloc(1, sizeof(struct pl_safetensors)); }

void pl_safetensors_free(struct pl_safetensors *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n_tensors; i++)
        free((char *)st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map)
            munmap(st->files[i].map, st->files[i].map_len);
        free(st->files[i].path);
    }
    free(st->files);
    free(st);
}

/* Appends a file entry (takes ownership of map); returns its index or -1. */
static int add_file(struct pl_safetensors *st, const char *path, void *map, size_t map_len)
{
    if (st->n_files == st->cap_files) {
        int cap = st->cap_files ? st->cap_files * 2 : 4;
        struct st_file *f = realloc(st->files, (size_t)cap * sizeof(*f));
        if (!f)
            return -1;
        st->files = f;
        st->cap_files = cap;
    }
    char *p = strdup(path);
    if (!p)
        return -1;
    st->files[st->n_files] = (struct st_file){.path = p, .map = map, .map_len = map_len};
    return st->n_files++;
}

static bool reserve_tensors(struct pl_safetensors *st, size_t extra)
{
    if (extra > (size_t)(INT_MAX - st->n_tensors))
        return false;
    size_t need = (size_t)st->n_tensors + extra;
    if (need <= (size_t)st->cap_tensors)
        return true;
    struct pl_tensor_info *t = realloc(st->tensors, need * sizeof(*t));
    if (!t)
        return false;
    st->tensors = t;
    st->cap_tensors = (int)need;
    return true;
}

static bool parse_dtype(const char *s, enum pl_dtype *out)
{
    if (strcmp(s, "F32") == 0)
        *out = PL_DTYPE_F32;
    else if (strcmp(s, "F16") == 0)
        *out = PL_DTYPE_F16;
    else if (strcmp(s, "BF16") == 0)
        *out = PL_DTYPE_BF16;
    else if (strcmp(s, "I32") == 0) /* quantized checkpoints: packed weights, zeros, g_idx */
        *out = PL_DTYPE_I32;
    else if (strcmp(s, "I64") == 0) /* compressed-tensors weight_shape */
        *out = PL_DTYPE_I64;
    else if (strcmp(s, "F8_E4M3") == 0) /* FP8 checkpoints */
        *out = PL_DTYPE_F8_E4M3;
    else if (strcmp(s, "I8") == 0) /* carried by some quantized checkpoints, not read */
        *out = PL_DTYPE_I8;
    else if (strcmp(s, "U8") == 0)
        *out = PL_DTYPE_U8;
    else
        return false;
    return true;
}

static bool is_known_other_dtype(const char *s)
{
    for (size_t i = 0; i < sizeof(known_other_dtypes) / sizeof(known_other_dtypes[0]); i++)
        if (strcmp(s, known_other_dtypes[i]) == 0)
            return true;
    return false;
}

/* A JSON integer that is >= 0, as uint64. */
static bool get_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return false;
    json_int_t i = json_integer_value(v);
    if (i < 0)
        return false;
    *out = (uint64_t)i;
    return true;
}

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Validates one header entry and appends it to st. `fname` is for messages. */
static pl_status parse_entry(struct pl_safetensors *st, int file_idx, const char *name,
                             const json_t *entry, const void *data, uint64_t data_len,
                             struct range *range, struct pl_err *err)
{
    const char *fname = st->files[file_idx].path;
    if (!json_is_object(entry))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: tensor '%s': entry is not a JSON object",
                          fname, name);

    const json_t *jdtype = json_object_get(entry, "dtype");
    if (!json_is_string(jdtype))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: tensor '%s': dtype is %s",
                          fname, name, jdtype ? "not a string" : "missing");
    const char *dname = json_string_value(jdtype);
    enum pl_dtype dtype;
    if (!parse_dtype(dname, &dtype)) {
        if (is_known_other_dtype(dname))
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "%s: tensor '%s': dtype %s is not supported (F32, F16, BF16, I32, I64, "
                              "F8_E4M3, I8, U8 only)",
                              fname, name, dname);
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: tensor '%s': unknown dtype '%s'", fname,
                          name, dname);
    }
    uint64_t esize = pl_dtype_size(dtype);

    const json_t *jshape = json_object_get(entry, "shape");
    if (!json_is_array(jshape))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: tensor '%s': shape is %s", fname, name,
                          jshape ? "not an array" : "missing");
    size_t n_dims = json_array_size(jshape);
    if (n_dims > PL_SAFETENSORS_MAX_DIMS)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: tensor '%s': shape has %zu dims, more than the %d supported", fname,
                          name, n_dims, PL_SAFETENSORS_MAX_DIMS);
    int64_t shape[PL_SAFETENSORS_MAX_DIMS];
    uint64_t n_el = 1;
    bool overflow = false;
    for (size_t d = 0; d < n_dims; d++) {
        uint64_t dim;
        if (!get_uint(json_array_get(jshape, d), &dim))
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: tensor '%s': shape[%zu] is not a non-negative integer", fname,
                              name, d);
        shape[d] = (int64_t)dim;
        /* Keep multiplying after an overflow only to detect a zero dim, which
         * makes the count 0 whatever came before. */
        if (__builtin_mul_overflow(n_el, dim, &n_el) || n_el > (uint64_t)INT64_MAX)
            overflow = true;
    }
    if (overflow) {
        bool has_zero = false;
        for (size_t d = 0; d < n_dims; d++)
            has_zero |= shape[d] == 0;
        if (!has_zero)
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: tensor '%s': element count of the shape overflows", fname,
                              name);
        n_el = 0;
    }
    uint64_t want_bytes;
    if (__builtin_mul_overflow(n_el, esize, &want_bytes))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: tensor '%s': byte size of the shape overflows",
                          fname, name);

    const json_t *joff = json_object_get(entry, "data_offsets");
    if (!json_is_array(joff) || json_array_size(joff) != 2)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: tensor '%s': data_offsets is %s", fname, name,
                          joff ? "not an array of two integers" : "missing");
    uint64_t begin, end;
    if (!get_uint(json_array_get(joff, 0), &begin) || !get_uint(json_array_get(joff, 1), &end))
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: tensor '%s': data_offsets are not non-negative integers", fname,
                          name);
    if (begin > end)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: tensor '%s': data_offsets begin %llu is after end %llu", fname, name,
                          (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: tensor '%s': data_offsets end %llu is beyond the data section "
                          "(%llu bytes)",
                          fname, name, (unsigned long long)end, (unsigned long long)data_len);
    if (end - begin != want_bytes)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: tensor '%s': data_offsets span %llu bytes but shape and dtype %s "
                          "need %llu",
                          fname, name, (unsigned long long)(end - begin), dname,
                          (unsigned long long)want_bytes);
    /* The backends read elements in place; a misaligned element would be
     * undefined behaviour there. Writers (safetensors, torch) align them.
     * An empty tensor has no element to misalign. */
    if (data && begin != end && ((uintptr_t)data + begin) % esize != 0)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "%s: tensor '%s': data at offset %llu is not aligned to its %llu-byte "
                          "elements",
                          fname, name, (unsigned long long)begin, (unsigned long long)esize);

    char *name_copy = strdup(name);
    if (!name_copy)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", fname);
    struct pl_tensor_info *t = &st->tensors[st->n_tensors++];
    memset(t, 0, sizeof(*t));
    t->name = name_copy;
    t->dtype = dtype;
    t->n_dims = (int)n_dims;
    memcpy(t->shape, shape, n_dims * sizeof(shape[0]));
    t->n_elements = (int64_t)n_el;
    t->data = data ? (const char *)data + begin : NULL;
    t->n_bytes = (size_t)(end - begin);
    t->file = fname;
    *range = (struct range){.begin = begin, .end = end, .name = name_copy};
    return PL_STATUS_OK;
}

static pl_status check_metadata(const char *fname, const json_t *meta, struct pl_err *err)
{
    if (!json_is_object(meta))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: __metadata__ is not a JSON object", fname);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: __metadata__ value of '%s' is not a string", fname, k);
    }
    return PL_STATUS_OK;
}

/* Parses one file's header and appends its tensors to st. */
static pl_status parse_into(struct pl_safetensors *st, int file_idx, const char *header,
                            size_t header_len, const void *data, uint64_t data_len,
                            struct pl_err *err)
{
    const char *fname = st->files[file_idx].path;
    json_error_t jerr;
    /* Duplicate names inside one header are an error, not "last one wins". */
    json_t *root = json_loadb(header, header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: header is not valid JSON: %s (line %d, column %d)",
                          fname, jerr.text, jerr.line, jerr.column);
    pl_status status = PL_STATUS_OK;
    struct range *ranges = NULL;
    if (!json_is_object(root)) {
        status = pl_err_set(err, PL_STATUS_FORMAT, "%s: header is not a JSON object", fname);
        goto out;
    }
    size_t n = json_object_size(root);
    ranges = malloc((n ? n : 1) * sizeof(*ranges));
    if (!ranges || !reserve_tensors(st, n)) {
        status = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory for %zu tensors", fname, n);
        goto out;
    }
    size_t n_ranges = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            status = check_metadata(fname, val, err);
        } else {
            status = parse_entry(st, file_idx, key, val, data, data_len, &ranges[n_ranges], err);
            if (status == PL_STATUS_OK)
                n_ranges++;
        }
        if (status != PL_STATUS_OK)
            goto out;
    }

    /* Overlap: after sorting by begin, a non-empty range must start at or
     * after the furthest end seen so far. Empty tensors own no bytes. */
    qsort(ranges, n_ranges, sizeof(*ranges), cmp_range);
    uint64_t max_end = 0;
    const char *max_owner = NULL;
    for (size_t i = 0; i < n_ranges; i++) {
        if (ranges[i].begin == ranges[i].end)
            continue;
        if (max_owner && ranges[i].begin < max_end) {
            status = pl_err_set(err, PL_STATUS_FORMAT,
                                "%s: tensor '%s' [%llu, %llu) overlaps tensor '%s' (ends at %llu)",
                                fname, ranges[i].name, (unsigned long long)ranges[i].begin,
                                (unsigned long long)ranges[i].end, max_owner,
                                (unsigned long long)max_end);
            goto out;
        }
        if (ranges[i].end > max_end) {
            max_end = ranges[i].end;
            max_owner = ranges[i].name;
        }
    }
out:
    free(ranges);
    json_decref(root);
    return status;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    const struct pl_tensor_info *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Sorts tensors by name and refuses duplicates (which can only come from
 * different files: one header cannot repeat a key). */
static pl_status finalize(struct pl_safetensors *st, struct pl_err *err)
{
    if (st->n_tensors > 1)
        qsort(st->tensors, (size_t)st->n_tensors, sizeof(st->tensors[0]), cmp_tensor_name);
    for (int i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return pl_err_set(err, PL_STATUS_FORMAT, "tensor '%s' appears in both %s and %s",
                              st->tensors[i].name, st->tensors[i - 1].file, st->tensors[i].file);
    return PL_STATUS_OK;
}

pl_status pl_safetensors_parse_header(const char *header, size_t header_len, const void *data,
                                      uint64_t data_len, const char *file_name,
                                      struct pl_safetensors **out, struct pl_err *err)
{
    if (out)
        *out = NULL;
    if (!file_name)
        file_name = "<memory>";
    if (!header && header_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: no header", file_name);
    if (header_len > PL_SAFETENSORS_MAX_HEADER)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: header of %zu bytes exceeds the %u allowed",
                          file_name, header_len, PL_SAFETENSORS_MAX_HEADER);
    struct pl_safetensors *st = st_new();
    if (!st)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", file_name);
    pl_status status;
    int idx = add_file(st, file_name, NULL, 0);
    if (idx < 0) {
        status = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", file_name);
        goto fail;
    }
    status = parse_into(st, idx, header ? header : "", header_len, data, data_len, err);
    if (status == PL_STATUS_OK)
        status = finalize(st, err);
    if (status != PL_STATUS_OK)
        goto fail;
    if (out)
        *out = st;
    else
        pl_safetensors_free(st);
    return PL_STATUS_OK;
fail:
    pl_safetensors_free(st);
    return status;
}

/* Maps `path` and appends its tensors to st. */
static pl_status open_into(struct pl_safetensors *st, const char *path, struct pl_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pl_err_set(err, errno == ENOENT ? PL_STATUS_NOT_FOUND : PL_STATUS_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return pl_err_set(err, PL_STATUS_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: file is %lld bytes, shorter than the 8-byte header length", path,
                          (long long)sb.st_size);
    }
    if ((unsigned long long)sb.st_size > SIZE_MAX) {
        close(fd);
        return pl_err_set(err, PL_STATUS_LIMIT, "%s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return pl_err_set(err, PL_STATUS_IO, "%s: mmap failed: %s", path, strerror(map_errno));
    int idx = add_file(st, path, map, size);
    if (idx < 0) {
        munmap(map, size);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", path);
    }
    const unsigned char *b = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b[i];
    if (n > PL_SAFETENSORS_MAX_HEADER)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: header length %llu exceeds the %u bytes allowed", path,
                          (unsigned long long)n, PL_SAFETENSORS_MAX_HEADER);
    if (n > size - 8)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: header length %llu is larger than the %zu bytes after it", path,
                          (unsigned long long)n, size - 8);
    const char *header = (const char *)b + 8;
    return parse_into(st, idx, header, (size_t)n, header + n, size - 8 - n, err);
}

pl_status pl_safetensors_open_file(const char *path, struct pl_safetensors **out,
                                   struct pl_err *err)
{
    *out = NULL;
    struct pl_safetensors *st = st_new();
    if (!st)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", path);
    pl_status status = open_into(st, path, err);
    if (status == PL_STATUS_OK)
        status = finalize(st, err);
    if (status != PL_STATUS_OK) {
        pl_safetensors_free(st);
        return status;
    }
    *out = st;
    return PL_STATUS_OK;
}

/* A shard name must stay inside the model directory: relative, no ".." part. */
static bool shard_name_is_safe(const char *s)
{
    if (s[0] == '\0' || s[0] == '/')
        return false;
    const char *p = s;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return false;
        if (!slash)
            break;
        p = slash + 1;
    }
    return true;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Opens the shards an index lists and checks the index against them. */
static pl_status open_index(struct pl_safetensors *st, const char *model_dir,
                            const char *index_path, struct pl_err *err)
{
    char *text = NULL;
    size_t len = 0;
    pl_status status = pl_fs_read_file(index_path, MAX_INDEX_BYTES, &text, &len, err);
    if (status != PL_STATUS_OK)
        return status;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    const char **shards = NULL;
    char *joined = NULL;
    if (!root) {
        status = pl_err_set(err, PL_STATUS_FORMAT, "%s: not valid JSON: %s (line %d, column %d)",
                            index_path, jerr.text, jerr.line, jerr.column);
        goto out;
    }
    json_t *wmap = json_object_get(root, "weight_map");
    if (!json_is_object(wmap)) {
        status = pl_err_set(err, PL_STATUS_FORMAT, "%s: weight_map is %s", index_path,
                            wmap ? "not a JSON object" : "missing");
        goto out;
    }
    size_t n = json_object_size(wmap);
    shards = malloc((n ? n : 1) * sizeof(*shards));
    if (!shards) {
        status = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", index_path);
        goto out;
    }
    size_t n_shards = 0;
    const char *name;
    json_t *v;
    json_object_foreach(wmap, name, v) {
        if (!json_is_string(v)) {
            status = pl_err_set(err, PL_STATUS_FORMAT,
                                "%s: weight_map entry for tensor '%s' is not a file name string",
                                index_path, name);
            goto out;
        }
        const char *shard = json_string_value(v);
        if (!shard_name_is_safe(shard)) {
            status = pl_err_set(err, PL_STATUS_FORMAT,
                                "%s: tensor '%s' names shard '%s', which is not a relative path "
                                "inside the model directory",
                                index_path, name, shard);
            goto out;
        }
        shards[n_shards++] = shard;
    }
    if (n_shards == 0) {
        status = pl_err_set(err, PL_STATUS_FORMAT, "%s: weight_map lists no tensors", index_path);
        goto out;
    }
    qsort(shards, n_shards, sizeof(*shards), cmp_str_ptr);
    for (size_t i = 0; i < n_shards; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0)
            continue; /* each shard is opened once */
        joined = pl_fs_path_join(model_dir, shards[i]);
        if (!joined) {
            status = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", index_path);
            goto out;
        }
        status = open_into(st, joined, err);
        free(joined);
        joined = NULL;
        if (status != PL_STATUS_OK) {
            pl_err_prefix(err, "%s names shard '%s'", index_path, shards[i]);
            goto out;
        }
    }
    status = finalize(st, err);
    if (status != PL_STATUS_OK)
        goto out;
    json_object_foreach(wmap, name, v) {
        const struct pl_tensor_info *t = pl_safetensors_find(st, name);
        joined = pl_fs_path_join(model_dir, json_string_value(v));
        if (!joined) {
            status = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", index_path);
            goto out;
        }
        if (!t || strcmp(t->file, joined) != 0) {
            status = pl_err_set(err, PL_STATUS_FORMAT,
                                "%s: tensor '%s' is listed in shard %s but %s%s", index_path,
                                name, joined, t ? "found in " : "missing from it",
                                t ? t->file : "");
            goto out;
        }
        free(joined);
        joined = NULL;
    }
out:
    free(joined);
    free(shards);
    json_decref(root);
    return status;
}

pl_status pl_safetensors_open_dir(const char *model_dir, struct pl_safetensors **out,
                                  struct pl_err *err)
{
    *out = NULL;
    pl_status status;
    struct pl_safetensors *st = NULL;
    char *index_path = pl_fs_path_join(model_dir, INDEX_NAME);
    char *single_path = pl_fs_path_join(model_dir, SINGLE_NAME);
    if (!index_path || !single_path) {
        status = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", model_dir);
        goto out;
    }
    if (pl_fs_is_file(index_path)) {
        st = st_new();
        if (!st) {
            status = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", model_dir);
            goto out;
        }
        status = open_index(st, model_dir, index_path, err);
    } else if (pl_fs_is_file(single_path)) {
        status = pl_safetensors_open_file(single_path, &st, err);
    } else {
        status = pl_err_set(err, PL_STATUS_NOT_FOUND, "%s: neither %s nor %s found", model_dir,
                            INDEX_NAME, SINGLE_NAME);
    }
out:
    if (status == PL_STATUS_OK) {
        *out = st;
    } else {
        pl_safetensors_free(st);
    }
    free(index_path);
    free(single_path);
    return status;
}

int pl_safetensors_count(const struct pl_safetensors *st) { return st ? st->n_tensors : 0; }

const struct pl_tensor_info *pl_safetensors_at(const struct pl_safetensors *st, int i)
{
    if (!st || i < 0 || i >= st->n_tensors)
        return NULL;
    return &st->tensors[i];
}

const struct pl_tensor_info *pl_safetensors_find(const struct pl_safetensors *st,
                                                 const char *name)
{
    if (!st || !name || st->n_tensors == 0)
        return NULL;
    struct pl_tensor_info key = {.name = name};
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof(st->tensors[0]),
                   cmp_tensor_name);
}
