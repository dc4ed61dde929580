"""ctypes declarations of the C API (include/rwkv_lite.h, API 1.5) used by the package: struct layouts mirror
the header field by field (tests/test_rwkv_lite.py checks them against the library's defaults)."""
import ctypes
import ctypes.util
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_int32, c_int64,
                    c_size_t, c_uint64, c_void_p)

API_MAJOR = 1
API_MINOR = 5


def _candidates():
    env = os.environ.get("RWKVL_LIBRARY")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "librwkvlite.so")  # installed with the package (pip install bindings/python)
    # The build tree: bindings/python/rwkv_lite -> the repository root's build folders.
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    for build in ("build", "build-release", "build-isa"):
        yield os.path.join(root, build, "librwkvlite.so")
    found = ctypes.util.find_library("rwkvlite")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if path and (os.path.exists(path) or not os.path.dirname(path)):
            try:
                return ctypes.CDLL(path), path
            except OSError as e:
                tried.append(f"{path}: {e}")
        else:
            tried.append(f"{path}: not found")
    raise ImportError("cannot find librwkvlite.so (build it with cmake, or set RWKVL_LIBRARY); tried:\n  " +
                      "\n  ".join(tried))


lib, library_path = _load()


class SamplerParams(Structure):
    _fields_ = [("temperature", c_float), ("top_k", c_int), ("top_p", c_float), ("presence_penalty", c_float),
                ("frequency_penalty", c_float), ("penalty_decay", c_float), ("seed", c_uint64)]


class FfnParams(Structure):
    _fields_ = [("mode", c_int), ("cache_bytes", c_uint64), ("prefetch", c_int), ("verify", c_int),
                ("random_frac", c_double), ("seed", c_uint64)]


class HeadParams(Structure):
    _fields_ = [("mode", c_int), ("p", c_double), ("min_clusters", c_int), ("max_clusters", c_int), ("compare", c_int)]


class MemoryParams(Structure):
    _fields_ = [("budget_bytes", c_uint64), ("prefetch", c_int), ("emb_cache_rows", c_int64), ("io_mb_per_s", c_double),
                ("io_latency_us", c_double), ("reserve_bytes", c_uint64), ("max_chunk", c_int)]


class SessionParams(Structure):
    _fields_ = [("n_threads", c_int), ("ffn", FfnParams), ("head", HeadParams), ("memory", MemoryParams)]


class ModelParams(Structure):
    _fields_ = [("weight_dtype", c_char_p), ("ln_x_eps_override", c_float)]


class ModelInfo(Structure):
    _fields_ = [("arch_major", c_int), ("arch_minor", c_int), ("arch_name", c_char * 16), ("file_kind", c_char * 16),
                ("weight_dtype", c_char * 16), ("n_layer", c_int), ("n_embd", c_int), ("n_vocab", c_int),
                ("n_head", c_int), ("head_size", c_int), ("n_ffn", c_int), ("ln_x_eps", c_float),
                ("n_params", c_uint64), ("weight_bytes", c_uint64), ("bytes_per_token", c_uint64),
                ("state_floats", c_uint64), ("sparse_ffn", c_int), ("ffn_predictor", c_int),
                ("ffn_weight_bytes", c_uint64), ("ffn_predictor_bytes", c_uint64), ("cluster_head", c_int),
                ("cluster_largest", c_int), ("head_bytes", c_uint64), ("cluster_head_bytes", c_uint64),
                ("emb_bytes", c_uint64)]


class GenerateParams(Structure):
    _fields_ = [("max_tokens", c_int64), ("sampling", SamplerParams), ("stop", POINTER(c_char_p)), ("n_stop", c_size_t),
                ("stop_at_eos", c_int), ("ban_eos", c_int), ("logprobs", c_int), ("top_logprobs", c_int),
                ("deadline_seconds", c_double), ("chunk", c_size_t), ("cache", c_void_p),
                ("checkpoints", POINTER(c_size_t)), ("n_checkpoints", c_size_t), ("cache_every", c_size_t),
                ("feed_last", c_int)]


class Piece(Structure):
    _fields_ = [("text", c_void_p), ("text_len", c_size_t), ("tokens", POINTER(c_int32)), ("n_tokens", c_size_t),
                ("logprobs", POINTER(c_float)), ("top_tokens", POINTER(c_int32)), ("top_logprobs", POINTER(c_float)),
                ("n_top", c_int)]


class GenerateResult(Structure):
    _fields_ = [("finish", c_int), ("prompt_tokens", c_size_t), ("cached_tokens", c_size_t), ("generated", c_int64),
                ("prompt_seconds", c_double), ("first_token_seconds", c_double), ("generation_seconds", c_double)]


class ChatMessage(Structure):
    _fields_ = [("role", c_int), ("content", c_char_p)]


class CompressRecipe(Structure):
    _fields_ = [("lowrank", c_int), ("rank_frac", c_double), ("rank", c_int64), ("budget_bytes", c_uint64),
                ("targets", ctypes.c_uint32), ("diag", c_int), ("force", c_int), ("damp", c_double), ("quant", c_int),
                ("quant_emb", c_int), ("quant_head", c_int), ("dtype", c_char_p), ("sparse_ffn", c_int),
                ("ffn_predictors", c_int), ("ffn_dtype", c_char_p), ("recall", c_double), ("pred_hidden", c_int),
                ("pred_epochs", c_int), ("pred_lr", c_double), ("pred_holdout", c_double), ("pred_int8", c_int),
                ("cluster_head", c_int), ("cluster_cap", c_int), ("pca_dims", c_int), ("head_epochs", c_int),
                ("head_lr", c_double), ("head_prior", c_int), ("prior_smoothing", c_double),
                ("cluster_source", c_int), ("seed", c_uint64), ("n_threads", c_int)]


class Calibration(Structure):
    _fields_ = [("tokens", POINTER(c_int32)), ("n_tokens", c_size_t), ("text", c_char_p), ("text_len", c_size_t),
                ("tokenizer", c_void_p), ("max_tokens", c_size_t), ("name", c_char_p)]


class CompressReport(Structure):
    _fields_ = [("weight_bytes_before", c_uint64), ("weight_bytes_after", c_uint64), ("out_file_bytes", c_uint64),
                ("calib_tokens", c_uint64), ("matrices_factored", c_int), ("matrices_skipped", c_int),
                ("matrices_dense", c_int), ("matrices_quantised", c_int), ("matrices_converted", c_int),
                ("budget_planned_bytes", c_uint64), ("budget_error_sum", c_double), ("ffn_bundle_bytes", c_uint64),
                ("ffn_predictor_bytes", c_uint64), ("cluster_k", c_int), ("seconds_lowrank_quant", c_double),
                ("seconds_sparse_collect", c_double), ("seconds_sparse_train", c_double), ("seconds_cluster", c_double),
                ("seconds_cluster_calibration", c_double), ("seconds_cluster_distillation", c_double),
                ("seconds_save", c_double), ("seconds_total", c_double), ("details", c_void_p)]


class TextResult(Structure):
    _fields_ = [("tokens", c_uint64), ("predicted", c_uint64), ("predicted_bytes", c_uint64), ("total_nll", c_double),
                ("mean_nll", c_double), ("ppl", c_double), ("bpb", c_double), ("seconds", c_double),
                ("tok_per_s", c_double), ("threads", c_int)]


class LambadaResultHead(Structure):
    """The leading fields of rwkvl_lambada_result (the statistics structs after them are not read here: the call
    writes into a buffer of LAMBADA_RESULT_BYTES, larger than the whole struct)."""
    _fields_ = [("n", c_uint64), ("correct", c_uint64), ("target_tokens", c_uint64), ("fallbacks", c_uint64),
                ("total_nll", c_double), ("acc", c_double), ("ppl", c_double), ("token_ppl", c_double),
                ("seconds", c_double), ("workers", c_int)]


LAMBADA_RESULT_BYTES = 4096

PIECE_FN = CFUNCTYPE(c_int, c_void_p, POINTER(Piece))

_P = c_void_p
_SIGS = {
    "rwkvl_api_version": (c_int, []),
    "rwkvl_last_error": (c_char_p, []),
    "rwkvl_status_name": (c_char_p, [c_int]),
    "rwkvl_system_info": (c_char_p, []),
    "rwkvl_model_default_params": (ModelParams, []),
    "rwkvl_model_load": (c_int, [c_char_p, POINTER(ModelParams), POINTER(_P)]),
    "rwkvl_model_free": (None, [_P]),
    "rwkvl_model_get_info": (c_int, [_P, POINTER(ModelInfo)]),
    "rwkvl_session_default_params": (SessionParams, []),
    "rwkvl_session_new": (c_int, [_P, POINTER(SessionParams), POINTER(_P)]),
    "rwkvl_session_free": (None, [_P]),
    "rwkvl_state_new": (c_int, [_P, POINTER(_P)]),
    "rwkvl_state_free": (None, [_P]),
    "rwkvl_state_reset": (c_int, [_P]),
    "rwkvl_state_copy": (c_int, [_P, _P]),
    "rwkvl_state_data": (POINTER(c_float), [_P]),
    "rwkvl_state_save": (c_int, [_P, c_char_p]),
    "rwkvl_state_load": (c_int, [_P, c_char_p]),
    "rwkvl_eval": (c_int, [_P, _P, POINTER(c_int32), c_size_t, c_size_t, POINTER(c_float)]),
    "rwkvl_eval_all_logits": (c_int, [_P, _P, POINTER(c_int32), c_size_t, c_size_t, POINTER(c_float)]),
    "rwkvl_tokenizer_for_model": (c_int, [_P, c_char_p, c_char_p, POINTER(_P)]),
    "rwkvl_tokenizer_free": (None, [_P]),
    "rwkvl_tokenizer_name": (c_char_p, [_P]),
    "rwkvl_tokenize": (c_int, [_P, c_char_p, c_size_t, POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
    "rwkvl_token_bytes": (c_int, [_P, c_int32, c_char_p, c_size_t, POINTER(c_size_t)]),
    "rwkvl_sampler_default_params": (SamplerParams, []),
    "rwkvl_generate_default_params": (GenerateParams, []),
    "rwkvl_generate": (c_int, [_P, _P, _P, POINTER(c_int32), c_size_t, POINTER(GenerateParams), PIECE_FN, c_void_p,
                               POINTER(GenerateResult)]),
    "rwkvl_finish_reason_name": (c_char_p, [c_int]),
    "rwkvl_chat_tokenize": (c_int, [_P, POINTER(ChatMessage), c_size_t, c_int, POINTER(c_int32), c_size_t,
                                    POINTER(c_size_t), POINTER(c_size_t)]),
    "rwkvl_chat_role_from_string": (c_int, [c_char_p, POINTER(c_int)]),
    "rwkvl_prefix_cache_new": (c_int, [c_uint64, POINTER(_P)]),
    "rwkvl_prefix_cache_free": (None, [_P]),
    "rwkvl_peak_rss_bytes": (c_uint64, []),
    "rwkvl_compress_default_recipe": (CompressRecipe, []),
    "rwkvl_compress": (c_int, [_P, POINTER(CompressRecipe), POINTER(Calibration), c_char_p, c_void_p, c_void_p,
                               POINTER(CompressReport)]),
    "rwkvl_compress_report_json": (c_int, [POINTER(CompressReport), c_char_p, c_size_t, POINTER(c_size_t)]),
    "rwkvl_compress_report_free": (None, [POINTER(CompressReport)]),
    "rwkvl_lowrank_method_from_string": (c_int, [c_char_p, POINTER(c_int)]),
    "rwkvl_quant_from_string": (c_int, [c_char_p, POINTER(c_int)]),
    "rwkvl_text_tokens_open": (c_int, [_P, c_char_p, c_int64, POINTER(_P)]),
    "rwkvl_text_tokens_free": (None, [_P]),
    "rwkvl_eval_text": (c_int, [_P, _P, c_void_p, POINTER(TextResult)]),
    "rwkvl_lambada_open": (c_int, [c_char_p, c_int64, POINTER(_P)]),
    "rwkvl_lambada_tokenize": (c_int, [_P, _P]),
    "rwkvl_lambada_free": (None, [_P]),
    "rwkvl_eval_lambada": (c_int, [_P, _P, c_void_p, c_void_p, c_void_p]),
}
for _name, (_res, _args) in _SIGS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args
