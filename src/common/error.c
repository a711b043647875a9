/* Status codes, their static texts, and thread-local error detail. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "rag_common.h"

static _Thread_local char last_error[512];

int rag_error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

void rag_error_clear(void) { last_error[0] = 0; }

const char *rag_error_last(void) { return last_error; }

int rag_mdb_error(int mdb_rc, const char *what)
{
    int code = mdb_rc == MDB_MAP_FULL ? RAG_EMAPFULL
             : mdb_rc == MDB_NOTFOUND ? RAG_ENOTFOUND
             : mdb_rc == MDB_CORRUPTED || mdb_rc == MDB_PAGE_NOTFOUND ? RAG_ECORRUPT
             : mdb_rc == MDB_VERSION_MISMATCH || mdb_rc == MDB_INVALID ? RAG_EVERSION
                                                                        : RAG_ESTORAGE;
    return rag_error_set(code, "%s: %s", what, mdb_strerror(mdb_rc));
}

const char *rag_strerror(int code)
{
    switch (code) {
    case RAG_OK: return "success";
    case RAG_ERROR: return "internal error";
    case RAG_ENOMEM: return "out of memory";
    case RAG_EINVAL: return "invalid argument";
    case RAG_ENOTFOUND: return "not found";
    case RAG_EEXISTS: return "already exists";
    case RAG_EIO: return "input/output error";
    case RAG_ESTORAGE: return "storage (LMDB) error";
    case RAG_EINDEX: return "vector index error";
    case RAG_EUTF8: return "invalid UTF-8";
    case RAG_EPARSE: return "document could not be parsed";
    case RAG_ETOOBIG: return "too big";
    case RAG_EUNSUPPORTED: return "not supported";
    case RAG_ETIMEOUT: return "timed out";
    case RAG_EBUSY: return "root is in use by another process";
    case RAG_EPROVIDER: return "embedding provider failed";
    case RAG_EVERSION: return "unsupported version";
    case RAG_EIDEMPOTENCY: return "idempotency key reused with a different payload";
    case RAG_ETRANSIENT: return "temporary failure, retry";
    case RAG_ECORRUPT: return "stored data is corrupt";
    case RAG_EFINGERPRINT: return "embedding provider differs from the one this root was built with";
    case RAG_EMAPFULL: return "storage map is full";
    case RAG_ESTATE: return "invalid state for this call";
    case RAG_EEMPTY: return "document has no indexable text";
    default: return "unknown error";
    }
}

int rag_version_number(void) { return RAG_VERSION_NUMBER; }
const char *rag_version_string(void) { return RAG_VERSION_STRING; }
void rag_free(void *p) { free(p); }
