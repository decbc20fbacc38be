#!/usr/bin/env bash
# Load benchmark: nodedns against dnsdist (packet cache) and unbound (forward-zone), all
# forwarding to one nsd, plus a batched UDP echo (examples/udp_echo.rs) as the kernel floor.
#
#   benches/load.sh            full run: release build, 3 rounds of every server and mix (~15 min)
#   benches/load.sh --smoke    one short run per mix with the debug build (CI: it must not rot;
#                              it checks every server answers, never how fast)
#   RUNS=1 DUR=2 benches/load.sh   fewer/shorter runs (full mode only)
#   SERVERS="nodedns dnsdist" MIXES=miss benches/load.sh   a subset (ratios need the servers)
#   NODEDNS=path/to/nodedns benches/load.sh   another nodedns binary (e.g. an older build)
#   CLIENTS=32 benches/load.sh   dnsperf client sockets (default 8): batch sizes follow it
#   MEMORY_ONLY=1 benches/load.sh  only nodedns's RSS growth per cached entry, median of RUNS
#                                  fresh daemons (release build; no peers, no throughput runs)
#
# Needs root-free loopback only, and the Debian packages dnsperf, nsd, dnsdist, unbound.
# Everything listens on 127.0.0.x; every process started here is stopped on exit.
#
# Method (docs/performance.md): each server runs with one worker/thread pinned to CPU 0;
# dnsperf and nsd share CPU 1. In each of RUNS rounds every server in turn gets a fresh
# daemon and one run per mix: QPS, server CPU microseconds per answered query (utime+stime
# delta from /proc/PID/stat over the run), RSS after the run. Then RUNS more rounds at half
# of nodedns's peak QPS on each mix, with dnsperf -v, for p50/p99 latency and CPU per query
# at that fixed load. Every figure is the median over the rounds.
set -euo pipefail

MODE=full
case "${1:-}" in
--smoke) MODE=smoke ;;
"") ;;
*)
    echo "usage: $0 [--smoke]" >&2
    exit 2
    ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ $MODE == smoke ]]; then
    RUNS=1 DUR=1 PROFILE=debug OVERLOAD_DUR=5
else
    RUNS=${RUNS:-3} DUR=${DUR:-4} PROFILE=release OVERLOAD_DUR=${OVERLOAD_DUR:-60}
fi
NAMES=100000        # names in the upstream zone
HOT=1000            # names looped by the hit mixes
MISS_PER_RUN=600000 # unique names generated for one miss run (more than it can send)
PORT=5300
UPSTREAM=127.0.0.2
declare -A ADDR=([nodedns]=127.0.0.11 [dnsdist]=127.0.0.12 [unbound]=127.0.0.13 [floor]=127.0.0.14)
read -r -a SERVERS <<<"${SERVERS:-nodedns dnsdist unbound floor}"
read -r -a MIXES <<<"${MIXES:-hit miss nxdomain cookie}"
DNSPERF=(dnsperf -p "$PORT" -c "${CLIENTS:-8}" -q 256 -t 2)
TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodedns-load.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        # Each daemon leads its own process group (setsid): this reaches its children too.
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in dnsperf nsd dnsdist unbound taskset; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool (apt-get install dnsperf nsd dnsdist unbound util-linux)" >&2
        exit 1
    }
done
if (($(nproc) < 2)); then
    echo "needs 2 CPUs (server on 0, load generator on 1)" >&2
    exit 1
fi

# --- build -------------------------------------------------------------------------------
cd "$ROOT"
# Two builds: built with an example, the binary would get the dev-dependencies' features
# (tokio's test-util among them), and the one measured must be the one shipped.
if [[ $PROFILE == release ]]; then
    nice cargo build --quiet --release --bin nodedns
    nice cargo build --quiet --release --example udp_echo
else
    cargo build --quiet --bin nodedns
    cargo build --quiet --example udp_echo
fi
NODEDNS=${NODEDNS:-$TARGET/$PROFILE/nodedns}
ECHO=$TARGET/$PROFILE/examples/udp_echo

# --- data: zone and query files ----------------------------------------------------------
# bench.: NAMES A records h000000..., a wildcard under miss.bench. for unique miss names,
# and nothing else, so nx*.bench. is NXDOMAIN (negative TTL 3600 from the SOA, RFC 2308).
{
    printf '$TTL 3600\n'
    printf 'bench. IN SOA ns.bench. host.bench. 1 3600 600 86400 3600\n'
    printf 'bench. IN NS ns.bench.\nns.bench. IN A 127.0.0.2\n'
    printf '*.miss.bench. IN A 198.18.0.1\n'
    awk -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++)
        printf "h%06d.bench. IN A 198.18.%d.%d\n", i, int(i / 256) % 256, i % 256 }'
} >"$WORK/bench.zone"
awk -v n="$HOT" 'BEGIN { for (i = 0; i < n; i++) printf "h%06d.bench A\n", i }' >"$WORK/hit.txt"
awk -v n="$HOT" 'BEGIN { for (i = 0; i < n; i++) printf "nx%06d.bench A\n", i }' >"$WORK/nxdomain.txt"
awk -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "h%06d.bench A\n", i }' >"$WORK/all.txt"
# The cookie mix: the hot names, each query with its own 8-byte client COOKIE (EDNS option
# 10, RFC 7873) as stub resolvers send them. dnsperf's -E sends one fixed option, so the
# queries are pre-built in dnsperf's binary input format (-B: 2-byte length, then the
# message; dnsperf writes its own ID).
perl -e '
    my ($n, $hot) = @ARGV;
    for my $i (0 .. $n - 1) {
        my $name = sprintf("h%06d", $i % $hot);
        my $q = pack("n6", 0, 0x0100, 1, 0, 0, 1)
            . pack("C", length $name) . $name . "\x05bench\x00" . pack("n2", 1, 1)
            . "\x00" . pack("n2Nn", 41, 1232, 0, 12) . pack("n2NN", 10, 8, $i, $i * 2654435761 % 4294967296);
        print pack("n", length $q), $q;
    }' 200000 "$HOT" >"$WORK/cookie.bin"

# --- daemons -----------------------------------------------------------------------------
# start NAME CPU CMD...: runs CMD in its own process group, pinned to CPU.
start() {
    local name=$1 cpu=$2
    shift 2
    setsid taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

stop() {
    kill -TERM -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    # Forgotten once stopped: the exit trap must not signal a group whose ID was reused.
    local pid left=()
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$1" ]] || left+=("$pid")
    done
    PIDS=("${left[@]}")
}

# wait_answer ADDR: until a query for h000000.bench gets an answer (bounded: 10 s).
wait_answer() {
    local i
    for i in $(seq 50); do
        if echo "h000000.bench A" | timeout 2 dnsperf -s "$1" -p "$PORT" -n 1 -t 1 2>/dev/null |
            grep -q 'Queries completed: *1 '; then
            return 0
        fi
        sleep 0.2
    done
    echo "no answer from $1:$PORT; logs in $WORK" >&2
    tail -n 20 "$WORK"/*.log >&2 || true
    exit 1
}

cat >"$WORK/nsd.conf" <<EOF
server:
  ip-address: $UPSTREAM
  port: $PORT
  server-count: 1
  database: ""
  zonelistfile: "$WORK/nsd.zonelist"
  xfrdfile: "$WORK/nsd.xfrd"
  pidfile: "$WORK/nsd.pid"
  username: ""
  chroot: ""
  verbosity: 0
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "bench."
  zonefile: "$WORK/bench.zone"
EOF

cat >"$WORK/nodedns.toml" <<EOF
[listen]
addresses = ["${ADDR[nodedns]}:$PORT"]
workers = 1
# dnsperf is one source standing for every pod of a node: the per-client limits stay
# (their table is still consulted on every miss) but never bind.
max_inflight_per_client = 10000
client_miss_rate = 0
[cache]
capacity = 200000
max_bytes = "256MiB"
[admin]
address = ""
[log]
level = "warn"
[[zones]]
name = "."
upstreams = ["$UPSTREAM:$PORT"]
EOF

cat >"$WORK/dnsdist.conf" <<EOF
setLocal("${ADDR[dnsdist]}:$PORT")
setSecurityPollSuffix("")
setMaxTCPClientThreads(1)
newServer({address="$UPSTREAM:$PORT", checkName="h000000.bench."})
getPool(""):setCache(newPacketCache(200000, {maxTTL=86400}))
EOF

cat >"$WORK/unbound.conf" <<EOF
server:
  interface: ${ADDR[unbound]}@$PORT
  num-threads: 1
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "$WORK"
  pidfile: "$WORK/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  qname-minimisation: no
  msg-cache-size: 128m
  rrset-cache-size: 256m
  num-queries-per-thread: 4096
  outgoing-range: 8192
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: $UPSTREAM@$PORT
EOF

start_server() {
    case $1 in
    nodedns) start nodedns 0 "$NODEDNS" --config "$WORK/nodedns.toml" ;;
    dnsdist) start dnsdist 0 dnsdist --supervised --disable-syslog -C "$WORK/dnsdist.conf" ;;
    unbound) start unbound 0 unbound -d -c "$WORK/unbound.conf" ;;
    floor) start floor 0 "$ECHO" "${ADDR[floor]}:$PORT" ;;
    esac
    SERVER_PID=$LAST_PID
    wait_answer "${ADDR[$1]}"
}

# --- measuring ---------------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
user_ticks() { awk '{ print $14 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# perf SERVER MIX [dnsperf args...]: one dnsperf run; prints "qps answered cpu_us_per_query".
perf_run() {
    local server=$1 mix=$2 c0 c1 out
    shift 2
    local input=(-d "$WORK/$mix.txt")
    case $mix in
    cookie) input=(-B -d "$WORK/cookie.bin") ;;
    miss) input=(-n 1 -d "$WORK/miss.txt") ;;
    esac
    c0=$(cpu_ticks "$SERVER_PID") u0=$(user_ticks "$SERVER_PID")
    out=$(taskset -c 1 "${DNSPERF[@]}" -s "${ADDR[$server]}" "${input[@]}" "$@" 2>&1)
    c1=$(cpu_ticks "$SERVER_PID") u1=$(user_ticks "$SERVER_PID")
    printf '%s\n' "$out" >"$WORK/last.out"
    awk -v c="$((c1 - c0))" -v u="$((u1 - u0))" -v tck="$TCK" '
        /Queries completed:/ { done = $3 }
        /Queries per second:/ { qps = $4 }
        END { if (done == 0) exit 1
              printf "%.0f %d %.2f %.0f\n", qps, done, c * 1e6 / tck / done, c ? 100 * u / c : 0 }' "$WORK/last.out" || {
        echo "$server/$mix: no query answered" >&2
        cat "$WORK/last.out" >&2
        exit 1
    }
}

# Per run, the miss mix gets names nobody asked before: a fresh label under miss.bench.
miss_names() {
    awk -v n="$MISS_PER_RUN" -v p="$1" 'BEGIN { for (i = 0; i < n; i++) printf "%s-%d.miss.bench A\n", p, i }' >"$WORK/miss.txt"
}

warm() {
    local server=$1 mix=$2
    case $mix in
    hit | nxdomain) perf_run "$server" "$mix" -n 2 >/dev/null ;;
    cookie) perf_run "$server" hit -n 2 >/dev/null ;;
    esac
}

RESULTS=$WORK/results # server mix run qps answered us rss user%
LATENCY=$WORK/latency # server mix rate p50_us p99_us us_at_rate

# Latency at a fixed offered load: dnsperf -v prints one line per answer, latency last.
latency_run() {
    local server=$1 mix=$2 rate=$3 run=$4 line
    [[ $mix == miss ]] && miss_names "lat-$server-$run"
    line=$(perf_run "$server" "$mix" -l "$DUR" -Q "$rate" -v)
    local _qps _answered us _user
    read -r _qps _answered us _user <<<"$line"
    grep -E '^> ' "$WORK/last.out" | awk '{ print $NF * 1e6 }' | sort -n >"$WORK/lat.sorted"
    awk -v s="$server" -v m="$mix" -v r="$rate" -v us="$us" '
        { v[NR] = $1 }
        END { if (NR == 0) { print s, m, r, "-", "-", us; exit }
              p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
              printf "%s %s %d %.0f %.0f %s\n", s, m, r, p50, p99, us }' "$WORK/lat.sorted" >>"$LATENCY"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'; }

MEMPER=$WORK/memper # server bytes_per_entry, one line per fresh daemon
# fill SERVER: every zone name once into the fresh cache of the running SERVER, and its RSS
# growth per cached entry recorded. The figure moves with the allocator's state, so every
# report takes the median over fresh daemons.
fill() {
    local r0 r1
    r0=$(rss_kib "$SERVER_PID")
    perf_run "$1" all -n 1 >/dev/null
    r1=$(rss_kib "$SERVER_PID")
    echo "$1 $(((r1 - r0) * 1024 / NAMES))" >>"$MEMPER"
    echo "  $1: $(((r1 - r0) * 1024 / NAMES)) bytes per entry (RSS $((r0 / 1024)) -> $((r1 / 1024)) MiB)" >&2
}
memper() { awk -v s="$1" '$1 == s { print $2 }' "$MEMPER" | median; }
result() { awk -v s="$1" -v m="$2" -v f="$3" '$1 == s && $2 == m { print $f }' "$RESULTS" | median; }

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); mode $MODE ($PROFILE build)"

start nsd 1 nsd -d -c "$WORK/nsd.conf"
NSD_PID=$LAST_PID
wait_answer "$UPSTREAM"

: >"$RESULTS"
: >"$LATENCY"
: >"$MEMPER"
if [[ ${MEMORY_ONLY:-} == 1 ]]; then
    for run in $(seq "$RUNS"); do
        start_server nodedns
        fill nodedns
        stop "$SERVER_PID"
    done
    echo "RSS growth per cached entry after $NAMES distinct names (bytes), median of $RUNS:"
    echo "  nodedns: $(memper nodedns)"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi
# Rounds, each server once per round with a fresh daemon: the host's noise comes in spells of
# tens of seconds, and all of one server's runs in a row would put them all in one spell.
for run in $(seq "$RUNS"); do
    for server in "${SERVERS[@]}"; do
        start_server "$server"
        # Also gives every server the same cache contents before the mixes.
        if [[ $server != floor ]]; then
            fill "$server"
        fi
        for mix in "${MIXES[@]}"; do
            warm "$server" "$mix"
            [[ $mix == miss ]] && miss_names "$server-$run"
            line=$(perf_run "$server" "$mix" -l "$DUR")
            read -r qps answered us user <<<"$line"
            echo "$server $mix $run $qps $answered $us $(rss_kib "$SERVER_PID") $user" >>"$RESULTS"
            echo "  round $run $server $mix: $qps qps, $us us/query ($user% user)" >&2
        done
        stop "$SERVER_PID"
    done
done

# RSS under 2x overload: nodedns with a small cache (full within a second, so the cache's
# own growth is over) offered twice its peak miss rate for OVERLOAD_DUR seconds. dnsperf gets
# a large window (-q) so unanswered queries don't throttle what it sends. RSS is sampled
# every 5 s; what counts is the growth after the first 10 s.
OVERLOAD=$WORK/overload # seconds rss_kib
if [[ " ${SERVERS[*]} " == *" nodedns "* ]]; then
    over_rate=$(($(result nodedns miss 4) * 2))
    ((over_rate > 0)) || over_rate=50000
    sed 's/^capacity = .*/capacity = 10000/' "$WORK/nodedns.toml" >"$WORK/nodedns-small.toml"
    start nodedns 0 "$NODEDNS" --config "$WORK/nodedns-small.toml"
    SERVER_PID=$LAST_PID
    wait_answer "${ADDR[nodedns]}"
    miss_names overload
    : >"$OVERLOAD"
    taskset -c 1 dnsperf -p "$PORT" -c 8 -q 20000 -t 2 -s "${ADDR[nodedns]}" -d "$WORK/miss.txt" \
        -l "$OVERLOAD_DUR" -Q "$over_rate" >"$WORK/overload.out" 2>&1 &
    over_pid=$!
    for ((t = 0; t < OVERLOAD_DUR; t += 5)); do
        echo "$t $(rss_kib "$SERVER_PID")" >>"$OVERLOAD"
        sleep 5
    done
    wait "$over_pid" || true
    echo "$OVERLOAD_DUR $(rss_kib "$SERVER_PID")" >>"$OVERLOAD"
    stop "$SERVER_PID"
fi

# Latency at half of nodedns's peak on each mix, every server at the same offered load, in
# RUNS rounds as above: a p99 from one run moves with whatever else the host did then.
for run in $(seq "$RUNS"); do
    for server in "${SERVERS[@]}"; do
        start_server "$server"
        for mix in "${MIXES[@]}"; do
            warm "$server" "$mix"
            rate=$(($(result nodedns "$mix" 4) / 2))
            latency_run "$server" "$mix" "$((rate > 0 ? rate : 1))" "$run"
        done
        stop "$SERVER_PID"
    done
done
stop "$NSD_PID"

# --- report ------------------------------------------------------------------------------
lat() { awk -v s="$1" -v m="$2" -v f="$3" '$1 == s && $2 == m && $f != "-" { print $f }' "$LATENCY" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "| mix | server | QPS | CPU us/query | user % | CPU us/query @ half load | p50 us | p99 us | RSS MiB |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for mix in "${MIXES[@]}"; do
    for server in "${SERVERS[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mix" "$server" \
            "$(result "$server" "$mix" 4)" "$(result "$server" "$mix" 6)" "$(result "$server" "$mix" 8)" \
            "$(lat "$server" "$mix" 6)" "$(lat "$server" "$mix" 4)" "$(lat "$server" "$mix" 5)" \
            "$(awk -v k="$(result "$server" "$mix" 7)" 'BEGIN { printf "%.1f", k / 1024 }')"
    done
done
echo
echo "Ratios nodedns/other (CPU per query at peak; at half load; QPS; p99 at half load):"
echo "| mix | vs | CPU us/q | CPU us/q @ half | QPS | p99 |"
echo "|---|---|---:|---:|---:|---:|"
for mix in "${MIXES[@]}"; do
    for other in dnsdist unbound floor; do
        printf '| %s | %s | %s | %s | %s | %s |\n' "$mix" "$other" \
            "$(ratio "$(result nodedns "$mix" 6)" "$(result "$other" "$mix" 6)")" \
            "$(ratio "$(lat nodedns "$mix" 6)" "$(lat "$other" "$mix" 6)")" \
            "$(ratio "$(result nodedns "$mix" 4)" "$(result "$other" "$mix" 4)")" \
            "$(ratio "$(lat nodedns "$mix" 5)" "$(lat "$other" "$mix" 5)")"
    done
done
echo
echo "RSS growth per cached entry after $NAMES distinct names (bytes):"
for server in nodedns dnsdist unbound; do
    if grep -q "^$server " "$MEMPER"; then echo "  $server: $(memper "$server")"; fi
done
if [[ -s $OVERLOAD ]]; then
    echo
    echo "nodedns under 2x overload ($over_rate qps offered on the miss mix, cache of 10k entries):"
    awk '/Queries sent:/ { s = $3 } /Queries completed:/ { c = $3 }
         END { if (s) printf "  sent %d, answered %d (%.0f%%)\n", s, c, 100 * c / s }' "$WORK/overload.out"
    awk '{ printf "  t=%ss rss=%.1f MiB\n", $1, $2 / 1024 }' "$OVERLOAD"
    awk '$1 == 10 { a = $2 } { z = $2 } END { if (a) printf "  RSS growth from 10 s to the end: %+.1f%%\n", 100 * (z - a) / a }' "$OVERLOAD"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
