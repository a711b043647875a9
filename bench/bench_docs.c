/* See bench_docs.h. */
#define _GNU_SOURCE
#include "bench_docs.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bench_docs_load(const char *who, const char *path, size_t limit, bench_doc **out,
                    size_t *n_out)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: cannot open %s\n", who, path);
        return -1;
    }
    size_t n = 0, cap = 0;
    bench_doc *docs = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((!limit || n < limit) && (len = getline(&line, &lcap, f)) > 0) {
        json_error_t err;
        json_t *o = json_loadb(line, (size_t)len, 0, &err);
        if (!o)
            continue;
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *title = json_string_value(json_object_get(o, "title"));
        const char *text = json_string_value(json_object_get(o, "text"));
        if (id && text && *text) {
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                bench_doc *grown = realloc(docs, cap * sizeof *docs);
                if (!grown) {
                    json_decref(o);
                    break;
                }
                docs = grown;
            }
            docs[n].id = strdup(id);
            docs[n].title = strdup(title ? title : "");
            docs[n].text = strdup(text);
            n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    *out = docs;
    *n_out = n;
    return n ? 0 : -1;
}

void bench_docs_free(bench_doc *docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(docs[i].id);
        free(docs[i].title);
        free(docs[i].text);
    }
    free(docs);
}
