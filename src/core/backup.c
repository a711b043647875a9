/*
 * rag_backup / rag_restore: a copy of a running root, and its restoration.
 *
 * Each module's LMDB environment is copied with mdb_env_copy2(MDB_CP_COMPACT), which reads one
 * snapshot of the environment while writers go on: every copy is consistent in itself.  The
 * modules are copied one after the other (the index, the embed module, the embedded broker,
 * and ingest last, so that the backup holds every put acknowledged before it ended), so a
 * version may be further along in one copy than in another; restoring drains and runs a
 * repairing fsck, whose repairs (resume a saga, re-index, purge) are exactly the ones such a
 * gap needs.  The retrieve cache and the FAISS snapshot are derived and not copied.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core_internal.h"

#define BACKUP_MARKER "BACKUP"
#define BACKUP_FORMAT 1
#define RESTORE_REPAIR_PASSES 4

/* 0: missing, 1: an empty directory, -1: exists and is not an empty directory. */
static int dir_state(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return -1;
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int empty = 1;
    struct dirent *e;
    while (empty && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = 0;
    closedir(d);
    return empty ? 1 : -1;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return rag_error_set(RAG_EIO, "cannot create %s: %s", path, strerror(errno));
    return RAG_OK;
}

/* Copy a regular file, fsync the copy. */
static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return rag_error_set(RAG_EIO, "cannot read %s: %s", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        int e = errno;
        close(in);
        return rag_error_set(RAG_EIO, "cannot create %s: %s", to, strerror(e));
    }
    char buf[1 << 16];
    int rc = RAG_OK;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = rag_error_set(RAG_EIO, "reading %s: %s", from, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n && !rc;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                rc = rag_error_set(RAG_EIO, "writing %s: %s", to, strerror(errno));
            else
                off += w;
        }
        if (rc)
            break;
    }
    if (!rc && fsync(out) != 0)
        rc = rag_error_set(RAG_EIO, "fsync %s: %s", to, strerror(errno));
    close(in);
    if (close(out) != 0 && !rc)
        rc = rag_error_set(RAG_EIO, "close %s: %s", to, strerror(errno));
    return rc;
}

static int copy_env(MDB_env *env, const char *dest_dir, const char *name)
{
    char path[RAG_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dest_dir, name);
    int rc = make_dir(path);
    if (rc)
        return rc;
    int mrc = mdb_env_copy2(env, path, MDB_CP_COMPACT);
    if (mrc)
        return rag_error_set(RAG_ESTORAGE, "backup of the %s environment to %s: %s", name, path,
                             mdb_strerror(mrc));
    return RAG_OK;
}

int rag_backup(rag_ctx *ctx, const char *dest_dir)
{
    rag_error_clear();
    if (!ctx || !dest_dir || !*dest_dir)
        return rag_error_set(RAG_EINVAL, "rag_backup: ctx and dest_dir are required");
    if (strlen(dest_dir) >= RAG_PATH_MAX)
        return rag_error_set(RAG_EINVAL, "rag_backup: path too long");
    int ds = dir_state(dest_dir);
    if (ds < 0)
        return rag_error_set(RAG_EEXISTS, "backup destination %s exists and is not an empty "
                                          "directory",
                             dest_dir);
    int rc = make_dir(dest_dir);
    const struct {
        const char *name;
        MDB_env *env;
    } envs[] = {
        {"index", ctx->index ? rag_index_env(ctx->index) : NULL},
        {"embed", ctx->embed ? rag_embed_env(ctx->embed) : NULL},
        {"queue", rag_queue_lmdb_transport_env(&ctx->transport)},
        {"ingest", ctx->ingest ? rag_ingest_env(ctx->ingest) : NULL},
    };
    for (size_t i = 0; i < sizeof envs / sizeof envs[0] && !rc; i++)
        if (envs[i].env)
            rc = copy_env(envs[i].env, dest_dir, envs[i].name);
    char from[RAG_PATH_MAX + 16], to[RAG_PATH_MAX + 16];
    if (!rc) {
        snprintf(from, sizeof from, "%s/FORMAT", ctx->cfg.root);
        snprintf(to, sizeof to, "%s/FORMAT", dest_dir);
        rc = copy_file(from, to);
    }
    if (!rc) {
        /* Written last: a directory without it is an unfinished backup. */
        snprintf(to, sizeof to, "%s/" BACKUP_MARKER, dest_dir);
        FILE *f = fopen(to, "wx");
        if (!f)
            rc = rag_error_set(RAG_EIO, "cannot create %s: %s", to, strerror(errno));
        else {
            fprintf(f, "ragcore-backup %d\nsource %s\ncreated_ms %llu\n", BACKUP_FORMAT,
                    ctx->cfg.root, (unsigned long long)rag_now_ms());
            int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
            bad |= fclose(f) != 0;
            if (bad)
                rc = rag_error_set(RAG_EIO, "cannot write %s", to);
        }
    }
    return rc;
}

/* Copy the backup's files (FORMAT, and data.mdb of each environment) into `root`. */
static int copy_backup(const char *backup_dir, const char *root)
{
    int rc = make_dir(root);
    char from[RAG_PATH_MAX + 64], to[RAG_PATH_MAX + 64];
    static const char *const envs[] = {"ingest", "embed", "index", "queue"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0] && !rc; i++) {
        snprintf(from, sizeof from, "%s/%s/data.mdb", backup_dir, envs[i]);
        if (access(from, F_OK) != 0)
            continue; /* that module was not hosted by the process that made the backup */
        snprintf(to, sizeof to, "%s/%s", root, envs[i]);
        rc = make_dir(to);
        if (!rc) {
            snprintf(to, sizeof to, "%s/%s/data.mdb", root, envs[i]);
            rc = copy_file(from, to);
        }
    }
    if (!rc) {
        snprintf(from, sizeof from, "%s/FORMAT", backup_dir);
        snprintf(to, sizeof to, "%s/FORMAT", root);
        rc = copy_file(from, to);
    }
    return rc;
}

int rag_restore(const char *backup_dir, const char *root, const rag_options *opts,
                size_t *findings)
{
    rag_error_clear();
    if (findings)
        *findings = 0;
    if (!backup_dir || !root || !*root)
        return rag_error_set(RAG_EINVAL, "rag_restore: backup_dir and root are required");
    if (strlen(backup_dir) >= RAG_PATH_MAX || strlen(root) >= RAG_PATH_MAX)
        return rag_error_set(RAG_EINVAL, "rag_restore: path too long");
    char marker[RAG_PATH_MAX + 16];
    snprintf(marker, sizeof marker, "%s/" BACKUP_MARKER, backup_dir);
    FILE *f = fopen(marker, "r");
    int fmt = 0;
    if (f) {
        if (fscanf(f, "ragcore-backup %d", &fmt) != 1)
            fmt = -1;
        fclose(f);
    }
    if (!f)
        return rag_error_set(RAG_ENOTFOUND, "%s holds no finished ragcore backup (no %s)",
                             backup_dir, BACKUP_MARKER);
    if (fmt != BACKUP_FORMAT)
        return rag_error_set(RAG_EVERSION, "backup %s has format %d; this library restores %d",
                             backup_dir, fmt, BACKUP_FORMAT);
    if (dir_state(root) < 0)
        return rag_error_set(RAG_EEXISTS, "restore target %s exists and is not an empty "
                                          "directory",
                             root);
    int rc = copy_backup(backup_dir, root);
    if (rc)
        return rc;
    rag_ctx *ctx = NULL;
    rc = rag_open(&ctx, root, opts);
    if (rc)
        return rc;
    rc = rag_drain(ctx, 0);
    /* A repair is carried out by events; one can leave another finding behind (a version
     * resumed in ingest that the index had already switched to, then confirmed): repeat until
     * a pass finds nothing, a few times at most. */
    for (int pass = 0; pass < RESTORE_REPAIR_PASSES && !rc; pass++) {
        rag_fsck_report *rep = NULL;
        rc = rag_fsck(ctx, RAG_FSCK_REPAIR, 0, &rep);
        size_t n = rc ? 0 : rep->count;
        rag_fsck_report_free(rep);
        if (findings)
            *findings += n;
        if (!rc && n == 0)
            break;
        if (!rc && pass == RESTORE_REPAIR_PASSES - 1)
            rc = rag_error_set(RAG_ECORRUPT, "restore of %s: %zu inconsistencies remain after "
                                             "%d repair passes (run rag fsck --repair)",
                               root, n, RESTORE_REPAIR_PASSES);
    }
    rag_close(ctx);
    return rc;
}
