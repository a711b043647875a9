/* Helpers shared by the queue module's own files. */
#ifndef RAG_MODULE_QUEUE
#error "private header of the queue module"
#endif
#ifndef RAG_QUEUE_INTERNAL_H
#define RAG_QUEUE_INTERNAL_H

#include "rag_queue.h"

/* The env an outbox writes to (rag_dead_retry moves a dead letter into it). */
MDB_env *rag_queue__outbox_env(const rag_outbox *ob);

#endif
