/* The assemble module as seen by the core: prompts from retrieved chunks. */
#ifndef RAG_ASSEMBLE_API_H
#define RAG_ASSEMBLE_API_H

#include "ragcore/rag.h"
#include "rag_common.h"

typedef struct rag_assembler rag_assembler;

/* Open `<root>/assemble/` (prompt templates). */
int rag_assembler_open(rag_assembler **out, const rag_config *cfg);
void rag_assembler_close(rag_assembler *as);

int rag_assembler_build(rag_assembler *as, const rag_results *results,
                        const rag_assemble_opts *opts, char **prompt_out);

#endif
