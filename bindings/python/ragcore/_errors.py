"""Exceptions of the ragcore binding: one class per ``RAG_E*`` status code family.

Every class derives from :class:`RagError`.  Where a built-in exception means the same thing,
the class also derives from it (``InvalidArgument`` is a ``ValueError``, ``NotFound`` a
``LookupError``, ``Timeout`` a ``TimeoutError``, ...), so generic ``except`` clauses keep
working.  Instances carry ``code`` (the negative C status), ``name`` (``"RAG_ENOTFOUND"``),
``strerror`` (the library's static text) and ``detail`` (``rag_error_last()`` at the time of
the failure).
"""

__all__ = [
    "RagError", "LibraryNotFound", "ClosedError",
    "InternalError", "OutOfMemory", "InvalidArgument", "NotFound", "AlreadyExists",
    "FileError", "StorageError", "VectorIndexError", "InvalidUTF8", "ParseError", "TooBig",
    "Unsupported", "Timeout", "Busy", "ProviderError", "VersionMismatch",
    "IdempotencyConflict", "TransientError", "Corrupt", "FingerprintMismatch", "MapFull",
    "StateError", "EmptyDocument",
]


class RagError(Exception):
    """Base class of every ragcore error.

    Constructed with the message only (so that the built-in bases such as ``OSError`` keep
    their one-argument meaning); the attributes are set by :func:`make_error`.
    """

    code = None  # negative RAG_E* value, None for errors raised by the binding itself
    name = "RAG_ERROR"
    strerror = ""
    detail = ""

    def __init__(self, message=""):
        super().__init__(message)


class InternalError(RagError):
    code, name = -1, "RAG_ERROR"


class OutOfMemory(RagError, MemoryError):
    code, name = -2, "RAG_ENOMEM"


class InvalidArgument(RagError, ValueError):
    code, name = -3, "RAG_EINVAL"


class NotFound(RagError, LookupError):
    code, name = -4, "RAG_ENOTFOUND"


class AlreadyExists(RagError):
    code, name = -5, "RAG_EEXISTS"


class FileError(RagError, OSError):
    code, name = -6, "RAG_EIO"


class StorageError(RagError):
    code, name = -7, "RAG_ESTORAGE"


class VectorIndexError(RagError):
    code, name = -8, "RAG_EINDEX"


class InvalidUTF8(RagError, ValueError):
    code, name = -9, "RAG_EUTF8"


class ParseError(RagError, ValueError):
    code, name = -10, "RAG_EPARSE"


class TooBig(RagError, ValueError):
    code, name = -11, "RAG_ETOOBIG"


class Unsupported(RagError):
    code, name = -12, "RAG_EUNSUPPORTED"


class Timeout(RagError, TimeoutError):
    code, name = -13, "RAG_ETIMEOUT"


class Busy(RagError):
    code, name = -14, "RAG_EBUSY"


class ProviderError(RagError):
    code, name = -15, "RAG_EPROVIDER"


class VersionMismatch(RagError):
    code, name = -16, "RAG_EVERSION"


class IdempotencyConflict(RagError):
    code, name = -17, "RAG_EIDEMPOTENCY"


class TransientError(RagError):
    code, name = -18, "RAG_ETRANSIENT"


class Corrupt(RagError):
    code, name = -19, "RAG_ECORRUPT"


class FingerprintMismatch(RagError):
    code, name = -20, "RAG_EFINGERPRINT"


class MapFull(RagError):
    code, name = -21, "RAG_EMAPFULL"


class StateError(RagError):
    code, name = -22, "RAG_ESTATE"


class EmptyDocument(RagError, ValueError):
    code, name = -23, "RAG_EEMPTY"


class ClosedError(StateError):
    """The :class:`~ragcore.Rag` handle (or a result set) was used after ``close()``."""


class LibraryNotFound(RagError, OSError):
    """``librag`` could not be loaded; the message names every place that was tried."""

    name = "LibraryNotFound"


_BY_CODE = {cls.code: cls for cls in (
    InternalError, OutOfMemory, InvalidArgument, NotFound, AlreadyExists, FileError,
    StorageError, VectorIndexError, InvalidUTF8, ParseError, TooBig, Unsupported, Timeout,
    Busy, ProviderError, VersionMismatch, IdempotencyConflict, TransientError, Corrupt,
    FingerprintMismatch, MapFull, StateError, EmptyDocument)}


def error_class(code):
    """The exception class of a status code (codes newer than this binding: RagError)."""
    return _BY_CODE.get(code, RagError)


def make_error(code, strerror, detail, cls=None):
    """Build the exception for ``code``: message = strerror plus, when present, detail."""
    cls = cls or error_class(code)
    message = "%s: %s" % (strerror, detail) if detail else strerror
    exc = cls(message)
    exc.code = code
    if cls is RagError:
        exc.name = "RAG_E(%d)" % code
    exc.strerror = strerror
    exc.detail = detail
    return exc
