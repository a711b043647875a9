/* Brute-force in-memory rag_vector_backend for unit tests of the index module. */
#ifndef RAG_FAKE_VECTOR_H
#define RAG_FAKE_VECTOR_H
#include "rag_vector_backend.h"
int rag_fake_vector_backend_new(rag_vector_backend **out, unsigned int dim);
#endif
