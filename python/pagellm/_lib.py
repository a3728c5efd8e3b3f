"""_lib -- finding and loading libpagellm.so, and the ctypes mirrors of include/pagellm.h.

Owns: where the library is looked for (PAGELLM_LIBRARY, the source tree's build
directories, an installed copy), the ctypes declarations of the public structs and
functions this package calls, and turning a pl_status into a Python exception that
carries the C message.

The struct mirrors must match include/pagellm.h field for field: tests/python checks
every size and offset against the C compiler's (abi_layout.c).
"""
import ctypes
import glob
import os
import subprocess
import sys
import threading

# ---- status codes and exceptions -------------------------------------------------

PL_STATUS_OK = 0
PL_STATUS_INVALID_ARGUMENT = 1
PL_STATUS_IO = 2
PL_STATUS_FORMAT = 3
PL_STATUS_UNSUPPORTED = 4
PL_STATUS_NO_MEMORY = 5
PL_STATUS_NOT_FOUND = 6
PL_STATUS_LIMIT = 7
PL_STATUS_ABORTED = 8
PL_STATUS_INTERNAL = 9

_STATUS_NAMES = {
    PL_STATUS_OK: "ok", PL_STATUS_INVALID_ARGUMENT: "invalid argument", PL_STATUS_IO: "i/o",
    PL_STATUS_FORMAT: "format", PL_STATUS_UNSUPPORTED: "unsupported",
    PL_STATUS_NO_MEMORY: "no memory", PL_STATUS_NOT_FOUND: "not found",
    PL_STATUS_LIMIT: "limit", PL_STATUS_ABORTED: "aborted", PL_STATUS_INTERNAL: "internal",
}


class PagellmError(RuntimeError):
    """An error from the C library: .status is the pl_status code, str() the C message."""

    def __init__(self, message, status=PL_STATUS_INTERNAL):
        super().__init__(message)
        self.status = status

    @property
    def status_name(self):
        return _STATUS_NAMES.get(self.status, str(self.status))


class InvalidArgumentError(PagellmError, ValueError):
    """PL_STATUS_INVALID_ARGUMENT / PL_STATUS_LIMIT: a bad request or parameter."""


class UnsupportedError(PagellmError, NotImplementedError):
    """PL_STATUS_UNSUPPORTED: well-formed, but pagellm does not do it."""


class NotFoundError(PagellmError, LookupError):
    """PL_STATUS_NOT_FOUND (a file, tensor, token or request that does not exist)."""


class OutOfMemoryError(PagellmError, MemoryError):
    """PL_STATUS_NO_MEMORY: an allocation failed or a pool is exhausted."""


_ERROR_CLASSES = {
    PL_STATUS_INVALID_ARGUMENT: InvalidArgumentError, PL_STATUS_LIMIT: InvalidArgumentError,
    PL_STATUS_UNSUPPORTED: UnsupportedError, PL_STATUS_NOT_FOUND: NotFoundError,
    PL_STATUS_NO_MEMORY: OutOfMemoryError,
}


def make_error(status, message):
    """The exception for a failed call: its class follows the status, its text is the C message."""
    if not message:
        message = "pagellm: %s" % _STATUS_NAMES.get(status, "error %d" % status)
    return _ERROR_CLASSES.get(status, PagellmError)(message, status)


# ---- struct mirrors (include/pagellm.h) -----------------------------------------

PL_MAX_LOGPROBS = 20

_c_int32_p = ctypes.POINTER(ctypes.c_int32)


class LogitBias(ctypes.Structure):
    _fields_ = [("token_id", ctypes.c_int32), ("bias", ctypes.c_float)]


class CSamplingParams(ctypes.Structure):
    _fields_ = [
        ("n", ctypes.c_int),
        ("presence_penalty", ctypes.c_float),
        ("frequency_penalty", ctypes.c_float),
        ("repetition_penalty", ctypes.c_float),
        ("temperature", ctypes.c_float),
        ("top_p", ctypes.c_float),
        ("top_k", ctypes.c_int),
        ("min_p", ctypes.c_float),
        ("has_seed", ctypes.c_bool),
        ("seed", ctypes.c_uint64),
        ("stop", ctypes.POINTER(ctypes.c_char_p)),
        ("n_stop", ctypes.c_int),
        ("stop_token_ids", _c_int32_p),
        ("n_stop_token_ids", ctypes.c_int),
        ("include_stop_str_in_output", ctypes.c_bool),
        ("ignore_eos", ctypes.c_bool),
        ("max_tokens", ctypes.c_int),
        ("min_tokens", ctypes.c_int),
        ("logprobs", ctypes.c_int),
        ("prompt_logprobs", ctypes.c_int),
        ("skip_special_tokens", ctypes.c_bool),
        ("spaces_between_special_tokens", ctypes.c_bool),
        ("logit_bias", ctypes.POINTER(LogitBias)),
        ("n_logit_bias", ctypes.c_int),
        ("allowed_token_ids", _c_int32_p),
        ("n_allowed_token_ids", ctypes.c_int),
        ("use_beam_search", ctypes.c_bool),
        ("beam_width", ctypes.c_int),
        ("length_penalty", ctypes.c_float),
        ("early_stopping", ctypes.c_bool),
        ("constraint_kind", ctypes.c_int),  # enum pl_constraint_kind
        ("constraint", ctypes.c_char_p),
        ("whitespace_pattern", ctypes.c_char_p),
        ("owned", ctypes.c_void_p),
    ]


class CLogprobEntry(ctypes.Structure):
    _fields_ = [
        ("token_id", ctypes.c_int32),
        ("logprob", ctypes.c_float),
        ("rank", ctypes.c_int),
        ("n_top", ctypes.c_int),
        ("top_ids", ctypes.c_int32 * PL_MAX_LOGPROBS),
        ("top_logprobs", ctypes.c_float * PL_MAX_LOGPROBS),
    ]


(PL_CONSTRAINT_NONE, PL_CONSTRAINT_JSON, PL_CONSTRAINT_JSON_OBJECT, PL_CONSTRAINT_REGEX,
 PL_CONSTRAINT_CHOICE, PL_CONSTRAINT_GRAMMAR) = range(6)
PL_FINISH_NONE, PL_FINISH_STOP, PL_FINISH_LENGTH, PL_FINISH_ABORT, PL_FINISH_ERROR = range(5)
FINISH_REASONS = {PL_FINISH_NONE: None, PL_FINISH_STOP: "stop", PL_FINISH_LENGTH: "length",
                  PL_FINISH_ABORT: "abort", PL_FINISH_ERROR: "error"}
PL_STOP_REASON_NONE, PL_STOP_REASON_STRING, PL_STOP_REASON_TOKEN = range(3)


class CCompletionOutput(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_int),
        ("text", ctypes.c_void_p),  # char * with text_len bytes (read as bytes, not C string)
        ("text_len", ctypes.c_size_t),
        ("token_ids", _c_int32_p),
        ("n_token_ids", ctypes.c_int),
        ("has_logprobs", ctypes.c_bool),
        ("cumulative_logprob", ctypes.c_double),
        ("logprobs", ctypes.POINTER(CLogprobEntry)),
        ("finish_reason", ctypes.c_int),
        ("stop_reason_kind", ctypes.c_int),
        ("stop_str", ctypes.c_char_p),
        ("stop_token_id", ctypes.c_int32),
    ]


class CRequestMetrics(ctypes.Structure):
    _fields_ = [
        ("arrival_time", ctypes.c_double),
        ("first_scheduled_time", ctypes.c_double),
        ("first_token_time", ctypes.c_double),
        ("last_token_time", ctypes.c_double),
        ("prev_token_time", ctypes.c_double),
        ("finished_time", ctypes.c_double),
    ]


class CRequestOutput(ctypes.Structure):
    _fields_ = [
        ("request_id", ctypes.c_char_p),
        ("prompt", ctypes.c_char_p),
        ("prompt_token_ids", _c_int32_p),
        ("n_prompt_token_ids", ctypes.c_int),
        ("num_cached_tokens", ctypes.c_int),
        ("has_prompt_logprobs", ctypes.c_bool),
        ("prompt_logprobs", ctypes.POINTER(CLogprobEntry)),
        ("outputs", ctypes.POINTER(CCompletionOutput)),
        ("n_outputs", ctypes.c_int),
        ("finished", ctypes.c_bool),
        ("embedding", ctypes.POINTER(ctypes.c_float)),
        ("n_embedding", ctypes.c_int),
        ("error", ctypes.c_char_p),
        ("error_status", ctypes.c_int),
        ("request_num", ctypes.c_uint64),
        ("finish_reason", ctypes.c_int),
        ("metrics", CRequestMetrics),
    ]


class COutputs(ctypes.Structure):
    _fields_ = [("items", ctypes.POINTER(CRequestOutput)), ("n", ctypes.c_int)]


class CLLMParams(ctypes.Structure):
    _fields_ = [
        ("model", ctypes.c_char_p),
        ("tokenizer", ctypes.c_char_p),
        ("dtype", ctypes.c_char_p),
        ("max_model_len", ctypes.c_int),
        ("max_num_seqs", ctypes.c_int),
        ("max_num_batched_tokens", ctypes.c_int),
        ("block_size", ctypes.c_int),
        ("num_kv_blocks", ctypes.c_int),
        ("kv_cache_bytes", ctypes.c_size_t),
        ("enable_prefix_caching", ctypes.c_bool),
        ("enable_chunked_prefill", ctypes.c_bool),
        ("long_prefill_token_threshold", ctypes.c_int),
        ("seed", ctypes.c_uint64),
        ("device", ctypes.c_char_p),
        ("gpu_memory_utilization", ctypes.c_double),
        ("n_threads", ctypes.c_int),
        ("generation_config", ctypes.c_char_p),
        ("load_format", ctypes.c_char_p),
        ("override_generation_config", ctypes.c_char_p),
        ("allow_long_max_model_len", ctypes.c_bool),
        ("enforce_eager", ctypes.c_bool),
        ("host_sampling", ctypes.c_bool),
        ("cpu_scalar_kernels", ctypes.c_bool),
        ("cuda_cublas_only", ctypes.c_bool),
        ("tensor_parallel_size", ctypes.c_int),
        ("quantization", ctypes.c_char_p),
        ("kv_cache_dtype", ctypes.c_char_p),
    ]


class CPrompt(ctypes.Structure):
    _fields_ = [("text", ctypes.c_char_p), ("token_ids", _c_int32_p),
                ("n_token_ids", ctypes.c_int)]


class CChatOptions(ctypes.Structure):
    _fields_ = [
        ("add_generation_prompt", ctypes.c_bool),
        ("continue_final_message", ctypes.c_bool),
        ("chat_template", ctypes.c_char_p),
        ("chat_template_kwargs", ctypes.c_char_p),
    ]


class CLLMStats(ctypes.Structure):
    _fields_ = [
        ("kv_blocks_total", ctypes.c_int),
        ("kv_blocks_used", ctypes.c_int),
        ("kv_blocks_peak_used", ctypes.c_int),
        ("kv_blocks_cached_free", ctypes.c_int),
        ("kv_waste", ctypes.c_double),
        ("prefix_cache_hit_rate", ctypes.c_double),
        ("num_preemptions", ctypes.c_uint64),
        ("num_steps", ctypes.c_uint64),
        ("prompt_tokens", ctypes.c_uint64),
        ("generation_tokens", ctypes.c_uint64),
        ("num_waiting", ctypes.c_int),
        ("num_running", ctypes.c_int),
        ("seconds", ctypes.c_double),
        ("tokens_per_second", ctypes.c_double),
    ]


# The mirrors by their C names (the layout test walks this table).
STRUCTS = {
    "pl_logit_bias": LogitBias, "pl_sampling_params": CSamplingParams,
    "pl_logprob_entry": CLogprobEntry, "pl_request_metrics": CRequestMetrics,
    "pl_completion_output": CCompletionOutput,
    "pl_request_output": CRequestOutput, "pl_outputs": COutputs, "pl_llm_params": CLLMParams,
    "pl_prompt": CPrompt, "pl_chat_options": CChatOptions, "pl_llm_stats": CLLMStats,
}

# ---- functions ------------------------------------------------------------------

_P = ctypes.POINTER
_handle = ctypes.c_void_p
_FUNCTIONS = {
    # name: (restype, argtypes)
    "pl_status_str": (ctypes.c_char_p, [ctypes.c_int]),
    "pl_sampling_params_default": (None, [_P(CSamplingParams)]),
    "pl_llm_params_default": (None, [_P(CLLMParams)]),
    "pl_chat_options_default": (None, [_P(CChatOptions)]),
    "pl_llm_new": (ctypes.c_int, [_P(CLLMParams), _P(_handle)]),
    "pl_llm_free": (None, [_handle]),
    "pl_llm_errmsg": (ctypes.c_char_p, [_handle]),
    "pl_llm_default_sampling_params": (None, [_handle, _P(CSamplingParams)]),
    "pl_free": (None, [ctypes.c_void_p]),
    "pl_llm_get_stats": (None, [_handle, _P(CLLMStats)]),
    "pl_llm_encode": (ctypes.c_int, [_handle, ctypes.c_char_p, ctypes.c_bool,
                                     _P(_c_int32_p), _P(ctypes.c_int)]),
    "pl_llm_decode": (ctypes.c_int, [_handle, _c_int32_p, ctypes.c_int, ctypes.c_bool,
                                     _P(ctypes.c_void_p)]),
    "pl_llm_apply_chat_template": (ctypes.c_int, [_handle, ctypes.c_char_p, _P(CChatOptions),
                                                  _P(ctypes.c_void_p)]),
    "pl_llm_has_tokenizer": (ctypes.c_bool, [_handle]),
    "pl_llm_vocab_size": (ctypes.c_int, [_handle]),
    "pl_llm_max_model_len": (ctypes.c_int, [_handle]),
    "pl_llm_token_id_exists": (ctypes.c_bool, [_handle, ctypes.c_int32]),
    "pl_llm_generate": (ctypes.c_int, [_handle, _P(CPrompt), ctypes.c_int, _P(CSamplingParams),
                                       ctypes.c_int, _P(COutputs)]),
    "pl_outputs_free": (None, [_P(COutputs)]),
    # streaming
    "pl_llm_submit": (ctypes.c_int, [_handle, ctypes.c_char_p, _P(CPrompt), _P(CSamplingParams),
                                     _P(ctypes.c_void_p)]),
    "pl_llm_submit_all": (ctypes.c_int, [_handle, _P(ctypes.c_char_p), _P(CPrompt), ctypes.c_int,
                                         _P(CSamplingParams), ctypes.c_int, _P(ctypes.c_void_p)]),
    "pl_llm_stream_next": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_double,
                                          _P(_P(CRequestOutput))]),
    "pl_llm_stream_abort": (None, [ctypes.c_void_p]),
    "pl_llm_stream_free": (None, [ctypes.c_void_p]),
    "pl_request_output_free": (None, [_P(CRequestOutput)]),
}

# ---- finding the library --------------------------------------------------------

_NAMES = ("libpagellm.so", "libpagellm.so.0")  # in-tree: the link; installed: the SONAME first


def _source_tree_candidates():
    """libpagellm.so in the build directories of the source tree holding this package
    (python/pagellm/ in a checkout): build/ first, then other build*/ by age, newest first."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(root, "include", "pagellm.h")):
        return []
    dirs = [os.path.join(root, "build")]
    others = [d for d in glob.glob(os.path.join(root, "build*")) if d not in dirs]
    # sanitizer builds cannot be loaded into a plain interpreter
    others = [d for d in others if "asan" not in os.path.basename(d)]
    others.sort(key=lambda d: os.path.getmtime(d), reverse=True)
    out = []
    for d in dirs + others:
        for name in _NAMES:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                out.append(p)
                break
    return out


def _installed_candidates():
    """An installed copy: in pkg-config's libdir for pagellm (PKG_CONFIG_PATH), then by
    name through the dynamic loader (LD_LIBRARY_PATH, the ldconfig cache), then in the
    interpreter's prefix (a virtual environment), /usr/local and /usr."""
    out = []
    try:
        r = subprocess.run(["pkg-config", "--variable=libdir", "pagellm"], capture_output=True,
                           text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            d = os.path.normpath(r.stdout.strip())
            out += [os.path.join(d, n) for n in reversed(_NAMES)
                    if os.path.isfile(os.path.join(d, n))][:1]
    except (OSError, subprocess.SubprocessError):
        pass
    out += list(reversed(_NAMES))  # bare names: the loader's search
    multiarch = getattr(sys.implementation, "_multiarch", None)
    for prefix in (sys.prefix, "/usr/local", "/usr"):
        dirs = [os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")]
        if multiarch:
            dirs.insert(1, os.path.join(prefix, "lib", multiarch))
        for d in dirs:
            for name in reversed(_NAMES):
                p = os.path.join(d, name)
                if os.path.isfile(p) and p not in out:
                    out.append(p)
                    break
    return out


_lock = threading.Lock()
_lib = None


class LibraryNotFoundError(ImportError):
    """No loadable libpagellm.so was found (see library_path())."""


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _loaded_path(lib, name):
    """The file the loader picked for a library loaded by bare name (dladdr)."""
    for libname in (None, "libdl.so.2"):
        try:
            dladdr = ctypes.CDLL(libname).dladdr
        except (OSError, AttributeError):
            continue
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        info = _DlInfo()
        addr = ctypes.cast(lib.pl_llm_new, ctypes.c_void_p)
        if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
            return os.fsdecode(info.dli_fname)
    return name


def _declare(lib, path):
    for name, (restype, argtypes) in _FUNCTIONS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise LibraryNotFoundError(
                "%s does not export %s: it is not a pagellm library of this package's "
                "version, or it was built without the public API" % (path, name)) from None
        fn.restype = restype
        fn.argtypes = argtypes
    lib.pagellm_path = path if os.sep in path else _loaded_path(lib, path)
    return lib


def load():
    """The loaded library (loaded once per process). Raises LibraryNotFoundError naming
    every place it looked."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        env = os.environ.get("PAGELLM_LIBRARY")
        if env:
            try:
                _lib = _declare(ctypes.CDLL(env), env)
            except OSError as e:
                raise LibraryNotFoundError("PAGELLM_LIBRARY=%s cannot be loaded: %s" % (env, e))
            return _lib
        tried = []
        for path in _source_tree_candidates() + _installed_candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append("%s (%s)" % (path, e))
                continue
            _lib = _declare(lib, path)
            return _lib
        raise LibraryNotFoundError(
            "libpagellm.so not found. Build it in the source tree (./scripts/build.sh build), "
            "install it (cmake --install build), or set PAGELLM_LIBRARY to its path. Tried: "
            + "; ".join(tried))


def library_path():
    """The path of the library this process uses (loading it if needed)."""
    return load().pagellm_path


def status_str(status):
    return load().pl_status_str(status).decode()
