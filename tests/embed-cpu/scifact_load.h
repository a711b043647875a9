/* Test helper: load "title\ntext" of up to `max` SciFact documents (jansson). */
#ifndef RAG_TEST_SCIFACT_LOAD_H
#define RAG_TEST_SCIFACT_LOAD_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

typedef struct scifact_docs {
    char **texts;
    size_t *lens;
    size_t n;
} scifact_docs;

static void scifact_free(scifact_docs *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->texts[i]);
    free(d->texts);
    free(d->lens);
    memset(d, 0, sizeof *d);
}

/* Returns 0 and fills `d`, or -1 when the data set is missing. */
static int scifact_load(scifact_docs *d, size_t max)
{
    memset(d, 0, sizeof *d);
    char *path = rag_test_data_path("scifact/docs.jsonl");
    if (!path)
        return -1;
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return -1;
    d->texts = calloc(max, sizeof *d->texts);
    d->lens = calloc(max, sizeof *d->lens);
    char *line = NULL;
    size_t cap = 0;
    while (d->n < max && getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (!o)
            continue;
        const char *title = json_string_value(json_object_get(o, "title"));
        const char *text = json_string_value(json_object_get(o, "text"));
        if (text) {
            size_t tl = title ? strlen(title) : 0, xl = strlen(text);
            char *s = malloc(tl + xl + 2);
            if (tl)
                memcpy(s, title, tl);
            s[tl] = '\n';
            memcpy(s + tl + 1, text, xl + 1);
            d->texts[d->n] = s;
            d->lens[d->n] = tl + 1 + xl;
            d->n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return 0;
}

#endif
