/* A private nats-server (JetStream on, 127.0.0.1 only, a free port, its own store dir) for
 * tests: start, stop, kill -9, restart on the same port and store dir (outage tests). */
#ifndef RAG_TEST_NATS_SERVER_H
#define RAG_TEST_NATS_SERVER_H

#include <sys/types.h>

/* rag_nats_server_start() returns this when no nats-server binary is installed: the test
 * turns it into a cmocka skip(). */
#define RAG_NATS_SERVER_MISSING 1

typedef struct rag_nats_server {
    pid_t pid;           /* 0 while not running */
    int port;
    char url[64];        /* "nats://127.0.0.1:<port>" */
    char store_dir[512]; /* JetStream store (-sd) */
    char log_path[600];  /* the server's output, for post-mortems */
    char binary[512];
    int own_store;       /* store_dir was created by start(): cleanup() removes it */
} rag_nats_server;

/*
 * Start a server: `nats-server -js -a 127.0.0.1 -p <free port> -sd <store_dir>` (no
 * monitoring port: 2.9 opens none unless -m is given), and wait (at most 10 s) until it
 * accepts connections.  The binary is $RAG_NATS_SERVER, else nats-server in $PATH,
 * /usr/sbin, /usr/local/sbin, /usr/bin, /usr/local/bin.
 * @param store_dir JetStream store directory, or NULL for a fresh one under $RAG_TEST_TMP
 *                  (or /tmp), removed by rag_nats_server_cleanup().
 * @return 0; RAG_NATS_SERVER_MISSING when nats-server is not installed; -1 on failure.
 */
int rag_nats_server_start(rag_nats_server *s, const char *store_dir);
/* SIGTERM, then wait (SIGKILL after 5 s).  0, or -1 when it was not running. */
int rag_nats_server_stop(rag_nats_server *s);
/* SIGKILL and wait (a crash).  0, or -1 when it was not running. */
int rag_nats_server_kill(rag_nats_server *s);
/* Start again on the same port and store dir (after stop or kill).  0 or -1. */
int rag_nats_server_restart(rag_nats_server *s);
/* Stop it if running and remove a store dir that start() created. */
void rag_nats_server_cleanup(rag_nats_server *s);

/* The `rag` tool of this build: $RAG_BUILD_DIR/rag, else <dir of self_exe>/../rag (a test
 * run by hand from <build>/tests).  Returns 0 when it is executable, -1 (message on stderr)
 * otherwise. */
int rag_nats_rag_binary(char *out, size_t size, const char *self_exe);

#endif
