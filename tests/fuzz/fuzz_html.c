/* libFuzzer target: rag_ingest__parse(RAG_FMT_HTML): libxml2's HTML parser, main-content
 * detection and the text walk; then the chunker.
 * The body is in fuzz_body.h, shared with tests/ingest/test_fuzz_regressions.c. */
#include "fuzz_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

FUZZ_HARNESS int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_html_body(data, size);
    return 0;
}
