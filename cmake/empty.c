/* Placeholder translation unit for a module folder that has no sources yet. */
typedef int rag_empty_translation_unit;
