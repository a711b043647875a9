/* A private nats-server for tests (see nats_server.h).  Self-contained (POSIX + Linux
 * prctl), so it can be compiled into the support library or #included by a test. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nats_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void ns_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long ns_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ns_find_binary(char *out, size_t len)
{
    const char *env = getenv("RAG_NATS_SERVER");
    if (env && *env) {
        if (access(env, X_OK) != 0)
            return -1;
        snprintf(out, len, "%s", env);
        return 0;
    }
    char dirs[4096];
    const char *path = getenv("PATH");
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin",
             path ? path : "");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (!*d)
            continue;
        snprintf(out, len, "%s/nats-server", d);
        if (access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

/* A port nobody listens on now.  Drawn at random from 20000..29999, below the kernel's
 * ephemeral range (32768..60999): tests run in parallel, and a test whose server is down for
 * an outage keeps its port for the restart -- a port the kernel hands out for "port 0" could
 * go to another test's server in between, and the two tests would share a broker. */
static int ns_free_port(void)
{
    static unsigned int seed;
    if (!seed)
        seed = (unsigned int)getpid() ^ (unsigned int)ns_mono_ms();
    for (int tries = 0; tries < 200; tries++) {
        int port = 20000 + (int)(rand_r(&seed) % 10000u);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -1;
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((unsigned short)port);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    return -1;
}

/* Occurrences of "Server is ready" in our server's log (each start writes one). */
static int ns_ready_lines(const rag_nats_server *s)
{
    FILE *f = fopen(s->log_path, "r");
    if (!f)
        return 0;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "Server is ready"))
            n++;
    fclose(f);
    return n;
}

static int ns_can_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int ns_spawn(rag_nats_server *s)
{
    const int ready_before = ns_ready_lines(s);
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Never outlive the test, even when it crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0)
            fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            if (fd > 2)
                close(fd);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) {
            dup2(nul, 0);
            if (nul > 0)
                close(nul);
        }
        char *argv[] = {s->binary, "-js", "-a", "127.0.0.1", "-p", port, "-sd", s->store_dir,
                        NULL};
        execv(s->binary, argv);
        _exit(127);
    }
    s->pid = pid;
    long long deadline = ns_mono_ms() + 10000;
    while (ns_mono_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            return -1; /* exited: port taken, bad store dir... (see log_path) */
        }
        /* Ours only once OUR server logged that it is ready: a connect alone could reach
         * another test's server on the same port while ours fails to bind. */
        if (ns_ready_lines(s) > ready_before && ns_can_connect(s->port))
            return 0;
        ns_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s->pid = 0;
    return -1;
}

int rag_nats_server_start(rag_nats_server *s, const char *store_dir)
{
    memset(s, 0, sizeof *s);
    if (ns_find_binary(s->binary, sizeof s->binary) != 0)
        return RAG_NATS_SERVER_MISSING;
    if (store_dir) {
        snprintf(s->store_dir, sizeof s->store_dir, "%s", store_dir);
        mkdir(s->store_dir, 0755);
    } else {
        const char *base = getenv("RAG_TEST_TMP");
        if (!base || !*base)
            base = "/tmp";
        mkdir(base, 0755);
        snprintf(s->store_dir, sizeof s->store_dir, "%s/nats-js-XXXXXX", base);
        if (!mkdtemp(s->store_dir))
            return -1;
        s->own_store = 1;
    }
    snprintf(s->log_path, sizeof s->log_path, "%s.log", s->store_dir);
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = ns_free_port();
        if (s->port <= 0)
            return -1;
        snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
        if (ns_spawn(s) == 0)
            return 0;
    }
    return -1;
}

static int ns_signal_and_wait(rag_nats_server *s, int sig, unsigned grace_ms)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    long long deadline = ns_mono_ms() + grace_ms;
    for (;;) {
        pid_t r = waitpid(s->pid, NULL, WNOHANG);
        if (r == s->pid || (r < 0 && errno == ECHILD))
            break;
        if (ns_mono_ms() >= deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            break;
        }
        ns_sleep_ms(5);
    }
    s->pid = 0;
    return 0;
}

int rag_nats_server_stop(rag_nats_server *s) { return ns_signal_and_wait(s, SIGTERM, 5000); }

int rag_nats_server_kill(rag_nats_server *s) { return ns_signal_and_wait(s, SIGKILL, 5000); }

int rag_nats_server_restart(rag_nats_server *s)
{
    if (s->pid > 0)
        rag_nats_server_stop(s);
    /* The old listener's port may linger briefly; the server binds with SO_REUSEADDR, but
     * give a failed start a few more tries. */
    for (int attempt = 0; attempt < 20; attempt++) {
        if (ns_spawn(s) == 0)
            return 0;
        ns_sleep_ms(100);
    }
    return -1;
}

static int ns_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void rag_nats_server_cleanup(rag_nats_server *s)
{
    if (s->pid > 0)
        rag_nats_server_stop(s);
    if (s->own_store && s->store_dir[0]) {
        nftw(s->store_dir, ns_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        remove(s->log_path);
    }
}

int rag_nats_rag_binary(char *out, size_t size, const char *self_exe)
{
    const char *bd = getenv("RAG_BUILD_DIR");
    if (bd && *bd) {
        snprintf(out, size, "%s/rag", bd);
    } else { /* run by hand: <build>/tests/<test> */
        snprintf(out, size, "%s", self_exe);
        char *slash = strrchr(out, '/');
        if (slash)
            snprintf(slash, size - (size_t)(slash - out), "/../rag");
    }
    if (access(out, X_OK) != 0) {
        fprintf(stderr, "no rag binary at %s (set RAG_BUILD_DIR)\n", out);
        return -1;
    }
    return 0;
}
