"""ctypes mirror of ragcore's public C API (include/ragcore/common.h and rag.h).

The structures below follow the headers field by field, in order; the ``*_VERSION`` constants
are the struct versions this binding was written against.  The library accepts older struct
versions, so a newer ``librag`` keeps working with this binding.

The library is loaded lazily (on the first call that needs it), so ``import ragcore`` works
with the standard library alone, even where librag is not installed.
"""

import ctypes
import ctypes.util
import os
import threading

from ._errors import LibraryNotFound, make_error

# ---- constants of the headers this binding mirrors (ragcore 0.1) ------------------------------

BINDING_VERSION_NUMBER = 100  # RAG_VERSION_NUMBER of the headers mirrored here (0.1.0)

RAG_OK = 0
RAG_OPTIONS_VERSION = 5
RAG_QUERY_VERSION = 2
RAG_ASSEMBLE_VERSION = 2
RAG_STATUS_VERSION = 4

RAG_DOC_ID_MAX = 256
RAG_QUEUE_TOPIC_MAX = 32
RAG_STATUS_MAX_QUEUES = 16

RAG_PUT_REPAIR_UTF8 = 0x1

RAG_HOST_INGEST = 0x1
RAG_HOST_EMBED = 0x2
RAG_HOST_INDEX = 0x4
RAG_HOST_RETRIEVE = 0x8
RAG_HOST_ALL = RAG_HOST_INGEST | RAG_HOST_EMBED | RAG_HOST_INDEX | RAG_HOST_RETRIEVE

RAG_MODE_DEFAULT = 0
RAG_MODE_VECTOR = 1
RAG_MODE_LEXICAL = 2
RAG_MODE_HYBRID = 3

RAG_CONSISTENCY_EVENTUAL = 0
RAG_CONSISTENCY_SESSION = 1

RAG_PROMPT_TEXT = 0
RAG_PROMPT_JSON = 1

# ---- structures --------------------------------------------------------------------------------

c_enum = ctypes.c_int  # C enums of these headers are int-sized (values fit an int)


class rag_options(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("provider", ctypes.c_void_p),        # rag_embed_provider * (not exposed: NULL)
        ("embed_mode", ctypes.c_char_p),
        ("embed_dim", ctypes.c_uint),
        ("index_factory", ctypes.c_char_p),
        ("chunk_target", ctypes.c_size_t),
        ("chunk_min", ctypes.c_size_t),
        ("chunk_max", ctypes.c_size_t),
        ("chunk_overlap", ctypes.c_size_t),
        ("max_doc_bytes", ctypes.c_size_t),
        ("map_size_mb", ctypes.c_size_t),
        ("max_attempts", ctypes.c_uint),
        ("retry_base_ms", ctypes.c_uint),
        ("retry_cap_ms", ctypes.c_uint),
        ("lease_ms", ctypes.c_uint),
        ("batch_size", ctypes.c_uint),
        ("no_sync", ctypes.c_int),
        ("transport", ctypes.c_void_p),       # rag_queue_transport * (not exposed: NULL)
        # version 2
        ("idempotency_ttl_s", ctypes.c_uint),
        ("saga_deadline_ms", ctypes.c_uint),
        # version 3
        ("bm25_k1", ctypes.c_float),
        ("bm25_b", ctypes.c_float),
        ("hybrid_lexical_weight", ctypes.c_float),
        # version 4
        ("reembed", ctypes.c_int),
        # version 5
        ("modules", ctypes.c_uint),
    ]


class rag_doc(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_char_p),
        # const void *: declared as char * so that a bytes object can be pointed at without a
        # copy (the struct keeps it alive); the size field, not a NUL, ends the data.
        ("data", ctypes.c_char_p),
        ("size", ctypes.c_size_t),
        ("mime", ctypes.c_char_p),
        ("title", ctypes.c_char_p),
        ("uri", ctypes.c_char_p),
        ("acl", ctypes.POINTER(ctypes.c_char_p)),
        ("acl_count", ctypes.c_size_t),
        ("idempotency_key", ctypes.c_char_p),
        ("flags", ctypes.c_uint),
    ]


class rag_put_result(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("version", ctypes.c_uint64)]


class rag_query(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("text", ctypes.c_char_p),
        ("k", ctypes.c_size_t),
        ("principals", ctypes.POINTER(ctypes.c_char_p)),
        ("principal_count", ctypes.c_size_t),
        ("unrestricted", ctypes.c_int),
        ("mode", c_enum),
        # version 2
        ("consistency", c_enum),
        ("timeout_ms", ctypes.c_uint32),
    ]


class rag_result(ctypes.Structure):
    # Strings are declared as void * so that ctypes does not decode them on every access;
    # the binding copies them out once with string_at().
    _fields_ = [
        ("doc_id", ctypes.c_void_p),
        ("version", ctypes.c_uint64),
        ("chunk", ctypes.c_uint32),
        ("score", ctypes.c_float),
        ("text", ctypes.c_void_p),
        ("title", ctypes.c_void_p),
        ("uri", ctypes.c_void_p),
    ]


class rag_results(ctypes.Structure):
    _fields_ = [("count", ctypes.c_size_t), ("items", ctypes.POINTER(rag_result))]


rag_token_counter = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_size_t)


class rag_assemble_opts(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("question", ctypes.c_char_p),
        ("token_budget", ctypes.c_size_t),
        ("template_text", ctypes.c_char_p),
        ("format", c_enum),
        # version 2
        ("count_tokens", rag_token_counter),
        ("count_tokens_arg", ctypes.c_void_p),
    ]


class rag_status_queue(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * RAG_QUEUE_TOPIC_MAX),
        ("ready", ctypes.c_uint64),
        ("delayed", ctypes.c_uint64),
        ("inflight", ctypes.c_uint64),
    ]


class rag_status_info(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("documents", ctypes.c_uint64),
        ("versions", ctypes.c_uint64),
        ("chunks", ctypes.c_uint64),
        ("vectors", ctypes.c_uint64),
        ("dead_letters", ctypes.c_uint64),
        ("index_epoch", ctypes.c_uint64),
        ("queue_count", ctypes.c_size_t),
        ("queues", rag_status_queue * RAG_STATUS_MAX_QUEUES),
        # version 2
        ("sagas_running", ctypes.c_uint64),
        ("sagas_failed", ctypes.c_uint64),
        ("sagas_compensating", ctypes.c_uint64),
        # version 3
        ("cache_hits", ctypes.c_uint64),
        ("cache_misses", ctypes.c_uint64),
        # version 4
        ("model_generation", ctypes.c_uint64),
        ("reembed_pending", ctypes.c_uint64),
        ("provider_fingerprint", ctypes.c_char * 128),
    ]


rag_ctx_p = ctypes.c_void_p  # opaque rag_ctx *

# ---- loading -----------------------------------------------------------------------------------

_lock = threading.Lock()
_lib = None


def _declare(lib):
    """Give every function we call its exact prototype (ctypes would otherwise assume int)."""
    P = ctypes.POINTER
    protos = {
        "rag_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "rag_error_last": (ctypes.c_char_p, []),
        "rag_version_number": (ctypes.c_int, []),
        "rag_version_string": (ctypes.c_char_p, []),
        "rag_free": (None, [ctypes.c_void_p]),
        "rag_options_init": (ctypes.c_int, [P(rag_options)]),
        "rag_open": (ctypes.c_int, [P(rag_ctx_p), ctypes.c_char_p, P(rag_options)]),
        "rag_close": (None, [rag_ctx_p]),
        "rag_start": (ctypes.c_int, [rag_ctx_p]),
        "rag_stop": (ctypes.c_int, [rag_ctx_p]),
        "rag_drain": (ctypes.c_int, [rag_ctx_p, ctypes.c_uint32]),
        "rag_doc_put": (ctypes.c_int, [rag_ctx_p, P(rag_doc), P(ctypes.c_uint64)]),
        "rag_doc_put_batch": (ctypes.c_int, [rag_ctx_p, P(rag_doc), ctypes.c_size_t,
                                             P(rag_put_result)]),
        "rag_doc_delete": (ctypes.c_int, [rag_ctx_p, ctypes.c_char_p]),
        "rag_search": (ctypes.c_int, [rag_ctx_p, P(rag_query), P(P(rag_results))]),
        "rag_results_free": (None, [P(rag_results)]),
        # The prompt is returned as void * (not char *) so that we keep the pointer to free it.
        "rag_assemble": (ctypes.c_int, [rag_ctx_p, P(rag_results), P(rag_assemble_opts),
                                        P(ctypes.c_void_p)]),
        "rag_status": (ctypes.c_int, [rag_ctx_p, P(rag_status_info)]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)  # AttributeError: not a ragcore library (caught by the loader)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def _candidates():
    env = os.environ.get("RAGCORE_LIBRARY")
    if env:
        # An explicit path is the only candidate: silently loading some other librag found on
        # the loader path would hide a misconfiguration.
        return [("$RAGCORE_LIBRARY", env)]
    out = []
    found = ctypes.util.find_library("rag")
    if found:
        out.append(('find_library("rag")', found))
    for name in ("librag.so.0.1", "librag.so", "librag.dylib"):
        if name != found:
            out.append(("loader path", name))
    return out


def load():
    """Load (once) and return librag, or raise LibraryNotFound naming what was tried."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for how, path in _candidates():
            try:
                lib = _declare(ctypes.CDLL(path))
            except (OSError, AttributeError) as e:
                tried.append("%s %s (%s)" % (how, path, e))
                continue
            _lib = lib
            return lib
        raise LibraryNotFound(
            "cannot load the ragcore C library (librag); tried: " + "; ".join(tried)
            + ". Set RAGCORE_LIBRARY to the path of librag.so, or install ragcore where the "
              "dynamic loader finds it (e.g. /usr/local/lib, then ldconfig).")


def check(lib, rc):
    """Raise the RagError subclass of ``rc`` (with rag_error_last()'s detail) unless RAG_OK.

    Called on the thread that made the failing call, right after it: rag_error_last() is
    thread-local and only valid until that thread's next ragcore call.
    """
    if rc == RAG_OK:
        return
    raise error_from(lib, rc)


def error_from(lib, rc, detail=None):
    if detail is None:
        detail = _text(lib.rag_error_last())
    return make_error(rc, _text(lib.rag_strerror(rc)), detail)


def _text(b):
    return b.decode("utf-8", "replace") if b else ""
