/**
 * @file ragcore/common.h
 * @brief Version, status codes and error reporting shared by every ragcore header.
 *
 * Every ragcore function that can fail returns an `int`: ::RAG_OK (0) or one of the
 * negative `RAG_E*` codes below.  Code numbers never change once released; new codes are
 * only appended.  rag_strerror() turns a code into static text and rag_error_last() returns
 * thread-local detail about the most recent failure on the calling thread.
 */
#ifndef RAGCORE_COMMON_H
#define RAGCORE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Symbol visibility: only functions marked RAG_API leave the shared library. */
#if defined(_WIN32)
#define RAG_API __declspec(dllexport)
#elif defined(__GNUC__) && __GNUC__ >= 4
#define RAG_API __attribute__((visibility("default")))
#else
#define RAG_API
#endif

/** @name Library version (semantic versioning) */
/**@{*/
#define RAG_VERSION_MAJOR 0 /**< incompatible API/ABI changes */
#define RAG_VERSION_MINOR 1 /**< compatible additions */
#define RAG_VERSION_PATCH 0 /**< fixes only */
#define RAG_VERSION_STRING "0.1.0" /**< "MAJOR.MINOR.PATCH" of these headers */
/** Single comparable number: major*10000 + minor*100 + patch. */
#define RAG_VERSION_NUMBER (RAG_VERSION_MAJOR * 10000 + RAG_VERSION_MINOR * 100 + RAG_VERSION_PATCH)
/**@}*/

/** Status codes.  Stable numbers: never renumbered, only appended. */
typedef enum rag_status_code {
    RAG_OK = 0,            /**< success */
    RAG_ERROR = -1,        /**< unspecified internal error (see rag_error_last()) */
    RAG_ENOMEM = -2,       /**< out of memory */
    RAG_EINVAL = -3,       /**< invalid argument (NULL where not allowed, bad option, id too long) */
    RAG_ENOTFOUND = -4,    /**< no such document, version, key or message */
    RAG_EEXISTS = -5,      /**< already exists */
    RAG_EIO = -6,          /**< file-system error (open, read, write, fsync, rename) */
    RAG_ESTORAGE = -7,     /**< LMDB reported an error */
    RAG_EINDEX = -8,       /**< the vector index (FAISS) reported an error */
    RAG_EUTF8 = -9,        /**< input is not valid UTF-8; detail names the byte offset */
    RAG_EPARSE = -10,      /**< document could not be parsed (malformed HTML/XML/Markdown) */
    RAG_ETOOBIG = -11,     /**< document or value exceeds a configured size limit */
    RAG_EUNSUPPORTED = -12,/**< operation, MIME type or mode not supported by this build */
    RAG_ETIMEOUT = -13,    /**< a bounded wait ran out (rag_drain, session consistency) */
    RAG_EBUSY = -14,       /**< the root is locked by another process */
    RAG_EPROVIDER = -15,   /**< the embedding provider failed permanently */
    RAG_EVERSION = -16,    /**< vtable/options version or on-disk format version not supported */
    RAG_EIDEMPOTENCY = -17,/**< idempotency key reused with a different payload */
    RAG_ETRANSIENT = -18,  /**< temporary failure; the operation may be retried */
    RAG_ECORRUPT = -19,    /**< stored data failed validation */
    RAG_EFINGERPRINT = -20,/**< provider fingerprint differs from the one the root was built with */
    RAG_EMAPFULL = -21,    /**< an LMDB map is full; reopen with a larger map size */
    RAG_ESTATE = -22,      /**< call not valid in the handle's current state (e.g. not started) */
    RAG_EEMPTY = -23       /**< document produced no indexable text */
} rag_status_code;

/**
 * Static, human-readable text for a status code.
 * @param code a ::rag_status_code (unknown codes yield "unknown error").
 * @return never NULL; the string is static and must not be freed.
 */
RAG_API const char *rag_strerror(int code);

/**
 * Detail about the most recent failure on the calling thread.
 * @return never NULL (empty string when nothing failed); valid until the next ragcore
 *         call on the same thread.
 */
RAG_API const char *rag_error_last(void);

/** @return ::RAG_VERSION_NUMBER of the library actually linked. */
RAG_API int rag_version_number(void);

/** @return ::RAG_VERSION_STRING of the library actually linked (static). */
RAG_API const char *rag_version_string(void);

/**
 * Free memory that ragcore allocated and handed to the caller (prompts, JSON texts).
 * @param p may be NULL.
 */
RAG_API void rag_free(void *p);

#ifdef __cplusplus
}
#endif

#endif /* RAGCORE_COMMON_H */
