/* Helpers shared by the tests: temporary roots, a deterministic fake embedding provider. */
#ifndef RAG_TEST_SUPPORT_H
#define RAG_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ragcore/sys/embed_provider.h"

/* A fresh empty directory under $RAG_TEST_TMP (or /tmp); returns a static-lifetime string
 * the caller frees with free(). */
char *rag_test_tmpdir(const char *name);
/* rm -rf */
void rag_test_rmtree(const char *path);
/* Path of a file under ../shared/data ($RAG_SHARED_DATA); NULL if absent (caller frees). */
char *rag_test_data_path(const char *rel);
/* Read a whole file (caller frees). */
char *rag_test_read_file(const char *path, size_t *len);

/* Fake provider: a deterministic bag of hashed bytes-trigrams, L2-normalised. Optional
 * failure injection: texts containing `fail_marker` fail with `fail_code`; the first
 * `transient_failures` calls fail with RAG_ETRANSIENT. `calls` and `texts_embedded` count. */
typedef struct rag_fake_provider_state {
    unsigned int dim;
    const char *fail_marker;
    int fail_code;
    int transient_failures;
    volatile int calls;
    volatile long texts_embedded;
} rag_fake_provider_state;

/* Heap-allocated provider; free state+struct with its free slot (or hand it to rag_open). */
rag_embed_provider *rag_fake_provider_new(unsigned int dim, rag_fake_provider_state **state_out);

#endif
