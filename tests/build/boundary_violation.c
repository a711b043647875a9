/*
 * Probe for the module-boundary test (check_boundaries.cmake).  It is never part of the
 * library: the test compiles it in the context of one module (that module's RAG_MODULE_<M>
 * define and include directories) with RAG_VIOLATION_HEADER naming another module's private
 * header by a relative path such as "../../src/ingest/ingest_internal.h".  A relative path
 * bypasses include directories entirely, so only the header's own
 *     #ifndef RAG_MODULE_<X> / #error "private header of the <x> module"
 * guard can stop it -- which is exactly what the test asserts.
 */
#ifndef RAG_VIOLATION_HEADER
#error "define RAG_VIOLATION_HEADER to a quoted header path"
#endif

#include RAG_VIOLATION_HEADER

/* ISO C forbids an empty translation unit. */
typedef int rag_boundary_probe;
