#!/usr/bin/env bash
# A multi-process ragcore deployment on one machine (docs/deployment.md):
#   - nats-server with JetStream, on 127.0.0.1, a free port, a temporary store directory;
#   - two embed workers, `rag serve --modules embed`, each on its own root;
#   - the primary (ingest, index, retrieve) ingests a directory, then searches it and prints
#     `rag status`: the primary embeds nothing itself, every vector came from a worker.
# Everything it started is stopped on exit (trap), its temporary directory removed.
#
#   run.sh [DIR [QUERY]]
#     DIR    documents to ingest (default: a few small files the script writes itself)
#     QUERY  search text (default: one that matches the default files)
#   Environment: RAG          the rag binary (default: `rag` on PATH)
#                NATS_SERVER  the nats-server binary (default: on PATH or /usr/sbin)
# Exit status: 0 success; 1 failure; 77 skipped (no nats-server, or a rag built without the
# NATS transport).  CTest runs it as example_multiprocess.
set -euo pipefail

RAG=${RAG:-rag}
WORKERS=2
PREFIX=EXAMPLE # stream prefix: keeps this pipeline apart from others on the same broker

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

NATS_SERVER=${NATS_SERVER:-$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || true)}
[ -n "$NATS_SERVER" ] && [ -x "$NATS_SERVER" ] ||
    skip "nats-server not found (Debian: apt install nats-server)"
command -v "$RAG" >/dev/null || die "rag binary not found: $RAG (set RAG=/path/to/rag)"

[ $# -eq 0 ] || [ -e "$1" ] || die "$1: no such file or directory"

work=$(mktemp -d "${TMPDIR:-/tmp}/ragcore-multiprocess-XXXXXX")
nats_pid=
worker_pids=()

# Stop a process (SIGTERM, then SIGKILL after 10 s); its exit status in $stopped_rc.
stop() {
    local pid=$1 i
    stopped_rc=0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || stopped_rc=$?
}

cleanup() {
    local rc=$? pid
    for pid in "${worker_pids[@]}"; do stop "$pid"; done
    [ -z "$nats_pid" ] || stop "$nats_pid"
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        for f in "$work"/*.log; do
            [ -f "$f" ] && { log "--- $f (last lines)"; tail -n 20 "$f" >&2; }
        done
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait up to $2 seconds until file $1 contains $3, while process $4 lives.
wait_for() {
    local file=$1 secs=$2 pattern=$3 pid=$4 i
    for i in $(seq $((secs * 10))); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---- the broker: port 0 (-p -1) lets it pick a free one, written to its ports file --------
mkdir -p "$work/nats"
"$NATS_SERVER" -js -a 127.0.0.1 -p -1 -sd "$work/nats/store" --ports_file_dir "$work/nats" \
    >"$work/nats.log" 2>&1 &
nats_pid=$!
wait_for "$work/nats.log" 20 "Server is ready" "$nats_pid" || die "nats-server did not start"
url=
for i in $(seq 50); do
    url=$(sed -n 's/.*"nats":\["\([^"]*\)".*/\1/p' "$work"/nats/*.ports 2>/dev/null | head -n 1)
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || die "no client URL in nats-server's ports file"
log "nats-server $nats_pid on $url"

transport=(--transport "$url" --transport-prefix "$PREFIX")

# ---- embed workers: each its own root; they share the broker's doc.chunked work queue ------
for w in $(seq "$WORKERS"); do
    "$RAG" --root "$work/worker$w" --no-sync "${transport[@]}" --modules embed serve \
        >"$work/worker$w.log" 2>&1 &
    worker_pids+=($!)
done
for w in $(seq "$WORKERS"); do
    f="$work/worker$w.log"
    if ! wait_for "$f" 30 "rag: serving" "${worker_pids[$((w - 1))]}"; then
        grep -q "not supported" "$f" && skip "this rag was built without the NATS transport"
        die "embed worker $w did not start"
    fi
    log "embed worker $w: pid ${worker_pids[$((w - 1))]}, root $work/worker$w"
done

# ---- documents ----------------------------------------------------------------------------
if [ $# -ge 1 ]; then
    docs=$1
    query=${2:-}
else
    docs="$work/docs"
    query=${2:-"which bird cannot fly but swims"}
    mkdir -p "$docs"
    cat >"$docs/penguins.md" <<'EOF'
# Penguins

Penguins are flightless seabirds of the southern hemisphere. They cannot fly, but their
wings have become flippers: penguins swim fast and dive deep to catch fish and krill.
EOF
    cat >"$docs/volcanoes.md" <<'EOF'
# Volcanoes

A volcano is an opening in the crust through which magma, ash and gases escape. Shield
volcanoes have gentle slopes built by runny lava; stratovolcanoes are steep and explosive.
EOF
    cat >"$docs/sourdough.txt" <<'EOF'
Sourdough bread rises with a starter of wild yeast and lactic acid bacteria instead of baker's
yeast. Feed the starter flour and water daily; bake when it doubles within a few hours.
EOF
    cat >"$docs/tides.txt" <<'EOF'
Tides are the rise and fall of the sea caused by the gravity of the moon and the sun. Most
coasts see two high tides and two low tides every lunar day of about 24 hours and 50 minutes.
EOF
fi

# ---- the primary: ingest, index and retrieve; no embed, so the workers embed everything ---
primary=("$RAG" --root "$work/primary" "${transport[@]}" --modules ingest,index,retrieve)
log "ingesting $docs"
"${primary[@]}" --timeout 60000 ingest "$docs" || die "ingest failed"

if [ -n "$query" ]; then
    log "searching: $query"
    out=$("${primary[@]}" search -k 3 "$query") || die "search failed"
    printf '%s\n' "$out"
    if [ $# -eq 0 ]; then
        # The default files: the penguin document must be the top hit.
        printf '%s\n' "$out" | sed -n 2p | grep -q "penguins.md" ||
            die "penguins.md is not the top hit"
    fi
fi

log "rag status of the primary"
status=$("${primary[@]}" status) || die "status failed"
printf '%s\n' "$status"
field() { printf '%s\n' "$status" | awk -v k="$1" '$1 == k { print $2; exit }'; }
docs_n=$(field documents)
chunks_n=$(field chunks)
vectors_n=$(field vectors)
dead_n=$(printf '%s\n' "$status" | awk '$1 == "dead" && $2 == "letters" { print $3; exit }')
[ "${docs_n:-0}" -gt 0 ] || die "no documents stored"
[ "${vectors_n:-0}" -eq "${chunks_n:-x}" ] || die "vectors ($vectors_n) != chunks ($chunks_n)"
[ "${dead_n:-0}" -eq 0 ] || die "$dead_n dead letters"

# ---- stop: workers first (they must exit cleanly), then the broker -------------------------
for i in "${!worker_pids[@]}"; do
    stop "${worker_pids[$i]}"
    [ "$stopped_rc" -eq 0 ] || die "embed worker $((i + 1)) exited with status $stopped_rc"
done
worker_pids=()
stop "$nats_pid"
nats_pid=
log "OK: $docs_n documents, $chunks_n chunks, $vectors_n vectors embedded by $WORKERS workers"
