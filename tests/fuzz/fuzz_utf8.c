/* libFuzzer target: rag_utf8_check / repair / nfc / nfkc_casefold and rag_tokenize on the
 * same bytes, with consistency checks; then the plain-text parser and the chunker.
 * The body is in fuzz_body.h, shared with tests/ingest/test_fuzz_regressions.c. */
#include "fuzz_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

FUZZ_HARNESS int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_utf8_body(data, size);
    return 0;
}
