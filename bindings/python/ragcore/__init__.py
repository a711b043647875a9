"""ragcore: Python bindings (pure ctypes) for the ragcore C library.

::

    import ragcore

    with ragcore.open("/tmp/myroot", no_sync=True) as rag:
        rag.put("guide", "<h1>Guide</h1><p>...</p>", mime="text/html", acl=["team-a"])
        rag.drain()
        hits = rag.search("how do I ...", k=5, principals=["team-a"])
        print(rag.assemble("how do I ...", hits, budget=1024))

The C library is found through ``$RAGCORE_LIBRARY`` (a path; when set, it is the only place
tried), else through the dynamic loader (``ctypes.util.find_library("rag")``, then
``librag.so.0.1`` and ``librag.so``).  It is loaded on first use, so importing this package
needs nothing but the standard library.

Access control: a search sees public documents (put without ``acl``) plus the documents whose
ACL names one of ``principals``.  ``unrestricted=True`` ignores ACLs (operator access).
``unrestricted=None`` (the default) and ``False`` both mean the C default (``unrestricted = 0``
in ``RAG_QUERY_INIT``), so a search without principals sees public documents only.

Threading: one :class:`Rag` may be used from several threads at once for put, delete,
search, assemble and status (the C calls release the GIL); ``close``, ``start`` and ``stop``
must not race with any other call on the same handle.  A root is used by one process at a
time (a second open fails with :class:`Busy`).
"""

import ctypes
import weakref
from dataclasses import dataclass

from . import _lib as C
from ._errors import *  # noqa: F401,F403  (the exception classes are part of the API)
from ._errors import ClosedError, InvalidArgument, make_error
from ._errors import __all__ as _error_names

__all__ = ["open", "Rag", "Hit", "Results", "version", "version_number", "library_path",
           "HOST_INGEST", "HOST_EMBED", "HOST_INDEX", "HOST_RETRIEVE", "HOST_ALL"] + _error_names

__version__ = "0.1.0"

HOST_INGEST = C.RAG_HOST_INGEST
HOST_EMBED = C.RAG_HOST_EMBED
HOST_INDEX = C.RAG_HOST_INDEX
HOST_RETRIEVE = C.RAG_HOST_RETRIEVE
HOST_ALL = C.RAG_HOST_ALL

_MODULE_BITS = {"ingest": HOST_INGEST, "embed": HOST_EMBED, "index": HOST_INDEX,
                "retrieve": HOST_RETRIEVE}
_MODES = {None: C.RAG_MODE_DEFAULT, "default": C.RAG_MODE_DEFAULT, "hybrid": C.RAG_MODE_HYBRID,
          "vector": C.RAG_MODE_VECTOR, "lexical": C.RAG_MODE_LEXICAL}
_CONSISTENCY = {None: C.RAG_CONSISTENCY_EVENTUAL, "eventual": C.RAG_CONSISTENCY_EVENTUAL,
                "session": C.RAG_CONSISTENCY_SESSION}

# rag_options fields settable through open(**options), by kind.
_OPT_STR = ("embed_mode", "index_factory")
_OPT_BOOL = ("no_sync", "reembed")
_OPT_FLOAT = ("bm25_k1", "bm25_b", "hybrid_lexical_weight")
_OPT_UINT = ("embed_dim", "chunk_target", "chunk_min", "chunk_max", "chunk_overlap",
             "max_doc_bytes", "map_size_mb", "max_attempts", "retry_base_ms", "retry_cap_ms",
             "lease_ms", "batch_size", "idempotency_ttl_s", "saga_deadline_ms")
_OPTIONS = frozenset(_OPT_STR + _OPT_BOOL + _OPT_FLOAT + _OPT_UINT + ("modules",))


def version():
    """Version string of the loaded C library, e.g. ``"0.1.0"``."""
    return C.load().rag_version_string().decode()


def version_number():
    """``major*10000 + minor*100 + patch`` of the loaded C library."""
    return C.load().rag_version_number()


def library_path():
    """Path or name the C library was loaded from."""
    return C.load()._name


def open(root, **options):  # noqa: A001  (ragcore.open mirrors rag_open)
    """Open (creating if needed) the root directory ``root`` and return a :class:`Rag`.

    Keyword options map one to one onto ``struct rag_options`` (see ragcore/rag.h for defaults
    and bounds; an option left out or ``None`` keeps the library default):

    ``embed_mode`` (str), ``embed_dim``, ``index_factory`` (str, FAISS factory string),
    ``chunk_target``, ``chunk_min``, ``chunk_max``, ``chunk_overlap``, ``max_doc_bytes``,
    ``map_size_mb``, ``max_attempts``, ``retry_base_ms``, ``retry_cap_ms``, ``lease_ms``,
    ``batch_size``, ``no_sync`` (bool), ``idempotency_ttl_s``, ``saga_deadline_ms``,
    ``bm25_k1``, ``bm25_b``, ``hybrid_lexical_weight`` (floats), ``reembed`` (bool) and
    ``modules`` (``HOST_*`` bits, or an iterable of "ingest", "embed", "index", "retrieve").

    A custom embedding provider or queue transport cannot be passed from Python; the built-in
    CPU provider and the embedded LMDB broker are used.

    Raises :class:`Busy` when another process holds the root, :class:`FingerprintMismatch`
    when it was built with another provider, :class:`InvalidArgument` for bad options.
    """
    return Rag(root, **options)


@dataclass(frozen=True)
class Hit:
    """One search hit (a chunk of a document version), copied out of the C results."""

    doc_id: str
    version: int
    chunk: int       # chunk number within the version, from 0
    score: float     # higher is better
    text: str        # the chunk's text (NFC)
    title: str = ""  # document title ("" when none)
    uri: str = ""    # document uri ("" when none)


class Results(list):
    """The list of :class:`Hit` returned by :meth:`Rag.search`.

    It also keeps the C ``rag_results`` it was copied from, so that :meth:`Rag.assemble` can
    hand the library its own results untouched.  That memory is released with
    ``rag_results_free()`` by :meth:`free` (or leaving a ``with`` block), or when the object is
    garbage collected.  The hits themselves are plain Python objects and stay valid after that.
    A modified, sliced or copied result list is still accepted by assemble (the binding then
    rebuilds the C array from the hits).
    """

    def __init__(self, hits=(), _ptr=None, _lib=None):
        super().__init__(hits)
        self._orig = tuple(self)
        self._ptr = _ptr
        self._finalizer = (weakref.finalize(self, _lib.rag_results_free, _ptr)
                           if _ptr is not None else None)

    def free(self):
        """Release the C results now (idempotent); the hits remain usable."""
        if self._finalizer is not None:
            self._finalizer()

    close = free

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def _c_results(self):
        """The C pointer, when still allocated and the list still holds exactly its hits."""
        if (self._finalizer is None or not self._finalizer.alive
                or len(self) != len(self._orig)
                or any(a is not b for a, b in zip(self, self._orig))):
            return None
        return self._ptr

    # Copies must not share (and later outlive) the C pointer: they are plain lists.
    def __copy__(self):
        return list(self)

    def __deepcopy__(self, memo):
        return list(self)

    def __reduce_ex__(self, protocol):
        return (list, (list(self),))


def _lib_error(cls, detail):
    """An error raised by the binding itself, worded like the library's (rag_strerror)."""
    return make_error(cls.code, C.load().rag_strerror(cls.code).decode("utf-8", "replace"),
                      detail, cls)


def _bytes(value, what, allow_none=True):
    """str -> UTF-8 bytes; bytes as is; reject NULs (C would silently cut the string there)."""
    if value is None:
        if allow_none:
            return None
        raise _lib_error(InvalidArgument, "%s is required" % what)
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))
    if b"\0" in value:
        raise _lib_error(InvalidArgument, "%s contains a NUL character" % what)
    return value


def _string_array(values, what):
    """A list of str -> (char *[] , count), or (None, 0) for None/empty."""
    if values is None:
        return None, 0
    if isinstance(values, (str, bytes)):
        values = [values]  # one principal, not its characters
    items = [_bytes(v, what, allow_none=False) for v in values]
    if not items:
        return None, 0
    return (ctypes.c_char_p * len(items))(*items), len(items)


def _uint(value, name, ctype=ctypes.c_uint32):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    top = (1 << (8 * ctypes.sizeof(ctype))) - 1
    if not 0 <= value <= top:
        # ctypes would silently wrap or truncate the value to fit the C type.
        raise _lib_error(InvalidArgument, "%s must be in 0..%d (got %d)" % (name, top, value))
    return value


_OPTION_CTYPES = dict(C.rag_options._fields_)


def _text(ptr):
    return ctypes.string_at(ptr).decode("utf-8", "replace") if ptr else ""


class Rag:
    """An open ragcore root (``rag_ctx``).  Create with :func:`ragcore.open`.

    Use it as a context manager (or call :meth:`close`): leaving the block closes the handle,
    and any later call raises :class:`ClosedError`.
    """

    def __init__(self, root, **options):
        lib = C.load()
        self._lib = lib
        self._ctx = None
        self._finalizer = None
        self.root = root if isinstance(root, str) else bytes(root).decode("utf-8", "replace")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError("unknown option(s) for ragcore.open: %s (known: %s)"
                            % (", ".join(sorted(unknown)), ", ".join(sorted(_OPTIONS))))
        opts = C.rag_options()
        C.check(lib, lib.rag_options_init(ctypes.byref(opts)))
        # The binding's struct is version 5 even if the library is newer: newer libraries
        # read only what a version-5 caller has.
        opts.version = C.RAG_OPTIONS_VERSION
        keep = []  # strings must live until rag_open() returns (it copies them)
        for name, value in options.items():
            if value is None:
                continue
            if name in _OPT_STR:
                b = _bytes(value, name)
                keep.append(b)
                setattr(opts, name, b)
            elif name in _OPT_BOOL:
                setattr(opts, name, 1 if value else 0)
            elif name in _OPT_FLOAT:
                setattr(opts, name, float(value))
            elif name == "modules":
                if isinstance(value, int):
                    bits = _uint(value, name, ctypes.c_uint)
                else:
                    bits = 0
                    for m in ([value] if isinstance(value, str) else value):
                        if m not in _MODULE_BITS:
                            raise _lib_error(InvalidArgument, "unknown module %r "
                                             "(known: %s)" % (m, ", ".join(_MODULE_BITS)))
                        bits |= _MODULE_BITS[m]
                opts.modules = bits
            else:
                setattr(opts, name, _uint(value, name, _OPTION_CTYPES[name]))
        ctx = C.rag_ctx_p()
        C.check(lib, lib.rag_open(ctypes.byref(ctx), _bytes(root, "root", False),
                                  ctypes.byref(opts)))
        self._ctx = ctx.value
        # Closes the handle if the user forgets to (garbage collection or interpreter exit).
        self._finalizer = weakref.finalize(self, lib.rag_close, ctx.value)

    # ---- lifecycle -----------------------------------------------------------------------------

    def close(self):
        """Stop workers, flush and free the handle.  Idempotent."""
        self._ctx = None
        if self._finalizer is not None:
            self._finalizer()

    @property
    def closed(self):
        return self._ctx is None

    def __enter__(self):
        self._handle()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<ragcore.Rag root=%r%s>" % (self.root, " closed" if self.closed else "")

    def _handle(self):
        ctx = self._ctx
        if ctx is None:
            raise _lib_error(ClosedError, "the ragcore handle is closed")
        return ctx

    def _call(self, fn, *args):
        C.check(self._lib, fn(self._handle(), *args))

    def start(self):
        """Start the background workers (one thread per consuming module)."""
        self._call(self._lib.rag_start)

    def stop(self):
        """Stop the background workers.  Idempotent."""
        self._call(self._lib.rag_stop)

    def drain(self, timeout_ms=0):
        """Wait until every accepted document is searchable (or dead-lettered).

        Without started workers the calling thread does the work.  ``timeout_ms=0`` waits
        without limit; otherwise :class:`Timeout` is raised when work remains.
        """
        self._call(self._lib.rag_drain, _uint(timeout_ms, "timeout_ms"))

    # ---- documents -----------------------------------------------------------------------------

    @staticmethod
    def _doc(doc_id, data, acl, mime, title, uri, idempotency_key, repair_utf8, keep):
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise TypeError("data must be bytes or str, not %s" % type(data).__name__)
        d = C.rag_doc()
        d.id = _bytes(doc_id, "doc_id", allow_none=False)
        d.data = data  # no copy; the struct keeps the bytes alive
        d.size = len(data)
        d.mime = _bytes(mime, "mime")
        d.title = _bytes(title, "title")
        d.uri = _bytes(uri, "uri")
        arr, n = _string_array(acl, "acl")
        if arr is not None:
            keep.append(arr)
            d.acl = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
            d.acl_count = n
        d.idempotency_key = _bytes(idempotency_key, "idempotency_key")
        d.flags = C.RAG_PUT_REPAIR_UTF8 if repair_utf8 else 0
        return d

    def put(self, doc_id, data, *, acl=None, mime=None, title=None, uri=None,
            idempotency_key=None, repair_utf8=False):
        """Store a new version of a document; returns its version number (1 for a new one).

        ``data`` is bytes or str (encoded as UTF-8).  ``acl``: principals allowed to read it
        (None or empty: public).  ``mime``: "text/plain", "text/markdown", "text/html" or None
        (detect).  The document is durable on return and searchable after the pipeline ran
        (:meth:`drain`, or :meth:`start`).  Raises :class:`InvalidUTF8`, :class:`ParseError`,
        :class:`TooBig`, :class:`EmptyDocument`, :class:`Unsupported`,
        :class:`IdempotencyConflict` (key reused with other bytes), ...
        """
        keep = []
        d = self._doc(doc_id, data, acl, mime, title, uri, idempotency_key, repair_utf8, keep)
        ver = ctypes.c_uint64(0)
        self._call(self._lib.rag_doc_put, ctypes.byref(d), ctypes.byref(ver))
        return ver.value

    def put_batch(self, docs):
        """Put several documents in one durable transaction (much faster than single puts).

        ``docs``: iterable of dicts with the arguments of :meth:`put` (``doc_id``, ``data``,
        optional ``acl``, ``mime``, ...).  Returns one entry per document: its new version
        (int), or the :class:`RagError` explaining why that document was skipped.  Raises when
        the transaction itself failed (then nothing was stored).
        """
        keep = []
        structs = []
        for doc in docs:
            doc = dict(doc)
            try:
                doc_id, data = doc.pop("doc_id"), doc.pop("data")
            except KeyError as e:
                raise TypeError("put_batch: each document needs %s" % e) from None
            structs.append(self._doc(doc_id, data, doc.pop("acl", None), doc.pop("mime", None),
                                     doc.pop("title", None), doc.pop("uri", None),
                                     doc.pop("idempotency_key", None),
                                     doc.pop("repair_utf8", False), keep))
            if doc:
                raise TypeError("put_batch: unknown document field(s) %s" % ", ".join(doc))
        if not structs:
            return []
        arr = (C.rag_doc * len(structs))(*structs)
        res = (C.rag_put_result * len(structs))()
        self._call(self._lib.rag_doc_put_batch, arr, len(structs), res)
        out = []
        for r in res:
            if r.code == C.RAG_OK:
                out.append(r.version)
            else:
                # rag_error_last() holds one detail for the whole batch: report the code only.
                out.append(C.error_from(self._lib, r.code, detail=""))
        return out

    def delete(self, doc_id):
        """Delete a document: hidden from searches at once.  :class:`NotFound` if not live."""
        self._call(self._lib.rag_doc_delete, _bytes(doc_id, "doc_id", allow_none=False))

    # ---- search and assembly -------------------------------------------------------------------

    def search(self, text, k=10, *, principals=None, unrestricted=None, mode=None,
               consistency="eventual", timeout_ms=0):
        """Search; returns a :class:`Results` list of :class:`Hit`, best first.

        ``principals``: the caller's user and groups (a str is one principal).
        ``unrestricted``: True ignores ACLs; None (default) or False is the C default: public
        documents plus those readable by ``principals`` (without principals: public only).
        ``mode``: None or "hybrid" (default), "vector", "lexical".
        ``consistency``: "eventual" (default) or "session" (first wait, up to ``timeout_ms``,
        0 = the library's 5000 ms, until this handle's earlier writes are searchable; needs
        running workers or a drain on another thread, else :class:`Timeout`).
        """
        if mode not in _MODES:
            raise _lib_error(InvalidArgument, "mode must be one of hybrid, vector, "
                             "lexical or None (got %r)" % (mode,))
        if consistency not in _CONSISTENCY:
            raise _lib_error(InvalidArgument, "consistency must be 'eventual' or "
                             "'session' (got %r)" % (consistency,))
        q = C.rag_query()
        q.version = C.RAG_QUERY_VERSION
        q.text = _bytes(text, "text", allow_none=False)
        q.k = _uint(k, "k", ctypes.c_size_t)
        arr, n = _string_array(principals, "principals")
        if arr is not None:
            q.principals = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
            q.principal_count = n
        q.unrestricted = 1 if unrestricted else 0
        q.mode = _MODES[mode]
        q.consistency = _CONSISTENCY[consistency]
        q.timeout_ms = _uint(timeout_ms, "timeout_ms")
        out = ctypes.POINTER(C.rag_results)()
        self._call(self._lib.rag_search, ctypes.byref(q), ctypes.byref(out))
        if not out:
            return Results()
        try:
            r = out.contents
            hits = []
            for i in range(r.count):
                it = r.items[i]
                hits.append(Hit(_text(it.doc_id), it.version, it.chunk, it.score,
                                _text(it.text), _text(it.title), _text(it.uri)))
        except BaseException:
            self._lib.rag_results_free(out)
            raise
        return Results(hits, out, self._lib)

    def assemble(self, question, hits, budget=2048, json=False, *, template=None,
                 count_tokens=None):
        """Build a prompt with numbered citations ``[n]`` from search hits, within ``budget``
        tokens; returns it as str (``json=True``: a JSON array of chat messages).

        ``hits``: the :class:`Results` of :meth:`search` (passed to the library as is), or any
        list of :class:`Hit` (or objects with the same attributes), e.g. a filtered slice.
        ``template``: text with ``{question}`` and ``{context}`` placeholders.
        ``count_tokens``: optional callable ``str -> int`` counting tokens (the model's
        tokenizer); default: the library's estimate of one token per 4 bytes.
        Raises :class:`TooBig` when not even the question fits the budget.
        """
        keep = []
        ptr = hits._c_results() if isinstance(hits, Results) else None
        if ptr is None:
            ptr = self._build_results(hits, keep)
        opts = C.rag_assemble_opts()
        opts.version = C.RAG_ASSEMBLE_VERSION
        opts.question = _bytes(question, "question", allow_none=False)
        opts.token_budget = _uint(budget, "budget", ctypes.c_size_t)
        opts.template_text = _bytes(template, "template")
        opts.format = C.RAG_PROMPT_JSON if json else C.RAG_PROMPT_TEXT
        failure = []
        if count_tokens is not None:
            def counter(_arg, text, length):
                try:
                    n = int(count_tokens(ctypes.string_at(text, length).decode("utf-8")))
                    return max(n, 0)
                except BaseException as e:  # must not unwind through C
                    failure.append(e)
                    return 1 << 40  # nothing fits: the library gives up quickly
            cb = C.rag_token_counter(counter)
            keep.append(cb)
            opts.count_tokens = cb
        prompt = ctypes.c_void_p()
        rc = self._lib.rag_assemble(self._handle(), ptr, ctypes.byref(opts),
                                    ctypes.byref(prompt))
        try:
            if failure:
                raise failure[0]
            C.check(self._lib, rc)
            return ctypes.string_at(prompt.value).decode("utf-8", "replace")
        finally:
            self._lib.rag_free(prompt)  # the library's allocator, never Python's

    @staticmethod
    def _build_results(hits, keep):
        """A C rag_results pointing into Python-owned memory (kept alive by ``keep``)."""
        hits = list(hits)
        items = (C.rag_result * max(len(hits), 1))()
        for i, h in enumerate(hits):
            it = items[i]
            for field in ("doc_id", "text", "title", "uri"):
                b = _bytes(getattr(h, field, "") or "", field)
                buf = ctypes.create_string_buffer(b)
                keep.append(buf)
                setattr(it, field, ctypes.addressof(buf))
            it.version = int(h.version)
            it.chunk = int(getattr(h, "chunk", 0))
            it.score = float(getattr(h, "score", 0.0))
        res = C.rag_results(len(hits), ctypes.cast(items, ctypes.POINTER(C.rag_result)))
        keep.append(items)
        keep.append(res)
        return ctypes.pointer(res)

    # ---- status --------------------------------------------------------------------------------

    def status(self):
        """Counts of documents, versions, chunks, vectors, dead letters, queue depths, sagas,
        cache hits and the provider fingerprint, as a dict (``queues``: a list of dicts with
        name, ready, delayed and inflight)."""
        info = C.rag_status_info()
        info.version = C.RAG_STATUS_VERSION
        self._call(self._lib.rag_status, ctypes.byref(info))
        out = {name: getattr(info, name) for name in (
            "documents", "versions", "chunks", "vectors", "dead_letters", "index_epoch",
            "sagas_running", "sagas_failed", "sagas_compensating", "cache_hits",
            "cache_misses", "model_generation", "reembed_pending")}
        out["provider_fingerprint"] = info.provider_fingerprint.decode("utf-8", "replace")
        n = min(info.queue_count, C.RAG_STATUS_MAX_QUEUES)
        out["queues"] = [{"name": q.name.decode("utf-8", "replace"), "ready": q.ready,
                          "delayed": q.delayed, "inflight": q.inflight}
                         for q in info.queues[:n]]
        return out
