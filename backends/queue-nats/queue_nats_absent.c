/*
 * The NATS transport's entry point in a build without libnats (-DRAG_WITH_NATS=off, or `auto`
 * where libnats-dev is not installed): it exists so that hosts link against one API whatever
 * the build, and reports that the transport is not available.
 */
#include <string.h>

#include "ragcore/transports.h"
#include "rag_common.h"

int rag_queue_nats_new(rag_queue_transport *out, const rag_queue_nats_options *opts)
{
    (void)opts;
    if (out) {
        /* Leave nothing a caller could mistake for a usable transport. */
        memset(out, 0, sizeof *out);
    }
    return rag_error_set(RAG_EUNSUPPORTED, "built without libnats (-DRAG_WITH_NATS)");
}
