#!/usr/bin/env bash
# End-to-end benchmark: omnisync vs `rsync -a` vs `cp -a`, local folder to local folder, on the
# same machine, disk and run (issue 2, "Performance").
#
#   benches/e2e.sh                      # full size: up to ~11 GB of temp data, 5-20 minutes
#   BENCH_SCALE=small benches/e2e.sh    # everything 10x smaller, for a quick check
#
# Environment:
#   TMPDIR            where the temp data goes (default /var/tmp); use the disk you care about
#   BENCH_SCALE       "small" shrinks every workload 10x
#   BENCH_RUNS        runs per tool and workload, best one kept (default 3)
#   BENCH_TIME_SYNC   1 = each timing includes a following `sync` (the tool's writes reach the
#                     disk); default 0 = the command alone, with an untimed `sync` between runs
#   BENCH_SETTLE      seconds to wait after mass deletions before timing file creation (default:
#                     vm.dirty_expire_centisecs / 100, i.e. 30 s). ext4 skips inodes freed less
#                     than that long ago when it allocates new ones, and that scan made creating
#                     files several times slower right after an `rm -rf` of 100,000 files
#   OMNISYNC_BIN      a built omnisync to use instead of `cargo build --release`
#   BENCH_ONLY        workloads to run, comma-separated: small, big, noop, hash (default all);
#                     e.g. BENCH_ONLY=noop for the no-op alone (about a minute)
#
# Workloads (targets from the issue):
#   first sync of 10,000 x 4 KiB files (100 folders)     omnisync <= rsync
#   first sync of 4 x 256 MiB files                      omnisync <= rsync
#   no-op re-run over 100,000 files in 1,000 folders     omnisync <= rsync / 2
#   secure-mode hashing on one core (vs b3sum, if installed)   >= 2.5 GB/s
#
# omnisync runs a generated config: protocol = "local", mode = "mirror-upload", and a fresh
# state folder for every first sync. Every first sync goes to a fresh destination. The page
# cache is NOT dropped (that needs root and hurts the rest of the machine): every tool reads a
# warm source, which is what a re-run sees in practice too.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE="${BENCH_SCALE:-full}"
RUNS="${BENCH_RUNS:-3}"
TIME_SYNC="${BENCH_TIME_SYNC:-0}"
SETTLE="${BENCH_SETTLE:-$(($(cat /proc/sys/vm/dirty_expire_centisecs 2>/dev/null || echo 3000) / 100))}"

if [[ "$SCALE" == "small" ]]; then DIV=10; else DIV=1; fi
ONLY=",${BENCH_ONLY:-small,big,noop,hash},"
want() { [[ "$ONLY" == *",$1,"* ]]; }
for w in ${BENCH_ONLY:+${BENCH_ONLY//,/ }}; do
  case "$w" in small | big | noop | hash) ;; *) echo "e2e: unknown workload in BENCH_ONLY: $w (small, big, noop, hash)" >&2; exit 2 ;; esac
done
SMALL_FILES=$((10000 / DIV))           # first sync, 4 KiB each
SMALL_DIRS=$((100 / DIV))
BIG_FILES=4                            # first sync
BIG_BYTES=$((256 * 1024 * 1024 / DIV))
NOOP_FILES=$((100000 / DIV))           # no-op re-run
NOOP_DIRS=$((1000 / DIV))

die() { echo "e2e: $*" >&2; exit 1; }
step() { printf '== [%4ds] %s\n' "$SECONDS" "$*"; }
# Let freshly freed inodes age (see BENCH_SETTLE) so that no tool pays for earlier deletions.
settle() {
  sync
  if ((SETTLE > 0)); then
    step "waiting ${SETTLE}s after deletions (BENCH_SETTLE)"
    sleep "$SETTLE"
  fi
}

if ! command -v rsync >/dev/null 2>&1; then
  die "rsync is not installed; install it with: apt-get install -y rsync   (then re-run)"
fi
command -v cp >/dev/null || die "cp not found"

# shellcheck source=benches/omnisync-bin.sh
source "$REPO/benches/omnisync-bin.sh"

BASE_TMP="${TMPDIR:-/var/tmp}"
# Sources plus every destination kept until its workload ends (4 KiB blocks for small files).
need=$(((3 * RUNS + 1) * (BIG_FILES * BIG_BYTES + SMALL_FILES * 4096) + 3 * NOOP_FILES * 4096))
avail=$(($(df --output=avail -k "$BASE_TMP" | tail -1) * 1024))
((avail > need)) || die "$BASE_TMP has $((avail >> 20)) MiB free, the benchmark needs $((need >> 20)) MiB (set TMPDIR, BENCH_RUNS or BENCH_SCALE=small)"
WORK="$(mktemp -d "$BASE_TMP/omnisync-e2e.XXXXXX")"
cleanup() {
  local rc=$?
  step "removing $WORK"
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# fsub A B -> A - B; fdiv A B -> A / B (floating point, via awk)
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
fmin() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

# Time a command (stdout discarded, stderr to $WORK/last.err); prints seconds, or fails.
timeit() {
  local t0 t1
  sync
  t0=$(now)
  if ! "$@" >/dev/null 2>"$WORK/last.err"; then
    echo "e2e: command failed: $*" >&2
    sed 's/^/    /' "$WORK/last.err" >&2
    return 1
  fi
  if [[ "$TIME_SYNC" == 1 ]]; then sync; fi
  t1=$(now)
  fsub "$t1" "$t0"
}

# Count files and bytes below a folder (ignoring omnisync's reserved .omnisync folder).
tally() {
  find "$1" -path "$1/.omnisync" -prune -o -type f -printf '%s\n' |
    awk '{ n++; b += $1 } END { printf "%d files, %d bytes", n, b }'
}
check_same() { # src dst tool
  local a b
  a=$(tally "$1")
  b=$(tally "$2")
  [[ "$a" == "$b" ]] || die "$3 left a different tree: source $a, destination $b"
}

# write_config FILE STATE_DIR SRC DST [compare]
write_config() {
  cat >"$1" <<EOF
[agent]
state_dir = "$2"

[[job]]
name = "bench"
protocol = "local"
mode = "mirror-upload"
local_path = "$3"
remote_path = "$4"
trigger = "manual"
delete_orphans = true
compare = "${5:-fast}"
EOF
}

omni_run() { # config
  "$OMNI" --config "$1" run bench
}

# Files of random content: make_files DIR NFILES BYTES_EACH
make_files() {
  mkdir -p "$1"
  head -c $(($2 * $3)) /dev/urandom | split -b "$3" -a 4 -d - "$1/f"
}
make_tree() { # root nfiles ndirs bytes_each
  local per=$(($2 / $3)) d
  for ((d = 0; d < $3; d++)); do
    make_files "$(printf '%s/d%04d' "$1" "$d")" "$per" "$4"
  done
}

echo "== machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?'), kernel $(uname -r)"
echo "== data under $WORK ($(df --output=fstype,source "$WORK" | tail -1 | xargs)); scale: $SCALE; best of $RUNS runs"
echo "== $(rsync --version | head -1); $(cp --version | head -1); omnisync $("$OMNI" --version | awk '{ print $2 }')"
echo "== page cache not dropped (cannot, without root and disrupting the machine): sources are warm"
[[ "$TIME_SYNC" == 1 ]] && echo "== timings include a final sync (BENCH_TIME_SYNC=1)"

step "generating data"
if want small; then make_tree "$WORK/src-small" "$SMALL_FILES" "$SMALL_DIRS" 4096; fi
if want big || want hash; then make_files "$WORK/src-big" "$BIG_FILES" "$BIG_BYTES"; fi
if want noop; then make_tree "$WORK/src-noop" "$NOOP_FILES" "$NOOP_DIRS" 1024; fi
sync

ROWS=()
# row NAME OMNI RSYNC CP TARGET_RATIO
row() {
  local ratio verdict
  ratio=$(fdiv "$2" "$3")
  verdict=$(awk -v r="$ratio" -v t="$5" 'BEGIN { print (r != "n/a" && r + 0 <= t + 0) ? "PASS" : "FAIL" }')
  ROWS+=("$(printf '%-44s | %10s | %8s | %8s | %14s | %-16s | %s' "$1" "$2" "$3" "$4" "$ratio" "ratio <= $5" "$verdict")")
}

# first_sync NAME SRC TARGET_RATIO: best of RUNS for each tool, fresh destination every time.
first_sync() {
  local name="$1" src="$2" target="$3" i t best_o="" best_r="" best_c="" dst cfg
  step "$name"
  for ((i = 1; i <= RUNS; i++)); do
    # Interleaved rounds, so that no tool always runs on a fresher or busier disk.
    dst="$WORK/dst-omni-$i"
    cfg="$WORK/omni-$i.toml"
    write_config "$cfg" "$WORK/state-$i" "$src" "$dst"
    t=$(timeit omni_run "$cfg")
    check_same "$src" "$dst" omnisync
    best_o=$(fmin "$best_o" "$t")
    echo "   run $i: omnisync $t s"

    dst="$WORK/dst-rsync-$i"
    t=$(timeit rsync -a "$src/" "$dst/")
    check_same "$src" "$dst" rsync
    best_r=$(fmin "$best_r" "$t")
    echo "   run $i: rsync -a $t s"

    dst="$WORK/dst-cp-$i"
    t=$(timeit cp -a "$src" "$dst")
    check_same "$src" "$dst" "cp -a"
    best_c=$(fmin "$best_c" "$t")
    echo "   run $i: cp -a    $t s"
  done
  # Deleting is left to the caller: freed inodes slow down the next creations (BENCH_SETTLE).
  row "$name" "$best_o" "$best_r" "$best_c" "$target"
}

if want small; then
  settle
  first_sync "first sync $SMALL_FILES x 4 KiB ($SMALL_DIRS folders)" "$WORK/src-small" 1.0
  rm -rf "$WORK"/dst-* "$WORK"/state-* "$WORK"/omni-*.toml
fi
if want big; then
  settle
  first_sync "first sync $BIG_FILES x $((BIG_BYTES / 1048576)) MiB" "$WORK/src-big" 1.0
  # A dozen inodes: no need to settle after these.
  rm -rf "$WORK"/dst-* "$WORK"/state-* "$WORK"/omni-*.toml
fi

FLOOR_LINE=""
noop() {
  # No-op: each tool syncs once (untimed), then its re-runs over the synced destination are
  # timed; cp has no no-op mode.
  noop_name="no-op re-run, $NOOP_FILES x 1 KiB ($NOOP_DIRS folders)"
  step "$noop_name"
  cfg="$WORK/omni-noop.toml"
  write_config "$cfg" "$WORK/state-noop" "$WORK/src-noop" "$WORK/dst-omni-noop"
  t=$(timeit omni_run "$cfg")
  check_same "$WORK/src-noop" "$WORK/dst-omni-noop" omnisync
  echo "   initial: omnisync $t s"
  t=$(timeit rsync -a "$WORK/src-noop/" "$WORK/dst-rsync-noop/")
  check_same "$WORK/src-noop" "$WORK/dst-rsync-noop" rsync
  echo "   initial: rsync -a $t s"
  best_o="" best_r=""
  for ((i = 1; i <= RUNS; i++)); do
    t=$(timeit omni_run "$cfg")
    best_o=$(fmin "$best_o" "$t")
    echo "   run $i: omnisync $t s"
    t=$(timeit rsync -a "$WORK/src-noop/" "$WORK/dst-rsync-noop/")
    best_r=$(fmin "$best_r" "$t")
    echo "   run $i: rsync -a $t s"
  done
  if "$OMNI" --config "$cfg" run bench --json 2>/dev/null | grep -q '"upload":[1-9]'; then
    die "omnisync's no-op re-run transferred files"
  fi
  row "$noop_name" "$best_o" "$best_r" "n/a" 0.5
  # The floor of any no-op that looks at both sides: reading every entry's metadata of both trees
  # (2 x NOOP_FILES stat calls), done by two `find`s in parallel and nothing else.
  walk_both() {
    find "$WORK/src-noop" -printf '%s %T@\n' >/dev/null &
    find "$WORK/dst-omni-noop" -printf '%s %T@\n' >/dev/null
    wait
}
best_f=""
for ((i = 1; i <= RUNS; i++)); do
  t=$(timeit walk_both)
  best_f=$(fmin "$best_f" "$t")
done
FLOOR_LINE="$(printf 'no-op floor: two parallel `find` walks of source and destination take %s s = %s of rsync'"'"'s %s s (omnisync %s s = %s of the floor)' \
  "$best_f" "$(fdiv "$best_f" "$best_r")" "$best_r" "$best_o" "$(fdiv "$best_o" "$best_f")")"
}
if want noop; then noop; fi

# Hashing on one core: a secure-mode dry run of the big files (nothing cached, so every file
# is hashed; the empty destination is not scanned) vs b3sum.
HASH_LINES=()
big_total=$((BIG_FILES * BIG_BYTES))
hash_bench() {
  pin=()
  command -v taskset >/dev/null && pin=(taskset -c 0)
  step "hashing $BIG_FILES x $((BIG_BYTES / 1048576)) MiB on one core (warm cache)"
  cat "$WORK"/src-big/* >/dev/null
  best_h=""
  for ((i = 1; i <= RUNS; i++)); do
    cfg="$WORK/omni-hash-$i.toml"
    write_config "$cfg" "$WORK/state-hash-$i" "$WORK/src-big" "$WORK/no-such-dst-$i" secure
    # The scan's hashing threads are not configurable; pinning (taskset) makes it one core.
    t=$(timeit "${pin[@]}" "$OMNI" --config "$cfg" run bench --dry-run)
    best_h=$(fmin "$best_h" "$t")
  done
  omni_gbs=$(fdiv "$(awk -v b="$big_total" 'BEGIN { print b / 1e9 }')" "$best_h")
  HASH_LINES+=("$(printf '%-44s | %8s s | %6s GB/s | target >= 2.5 GB/s | %s' \
    "omnisync compare=secure (dry run, 1 core)" "$best_h" "$omni_gbs" \
    "$(awk -v g="$omni_gbs" 'BEGIN { print (g + 0 >= 2.5) ? "PASS" : "FAIL" }')")")
  if command -v b3sum >/dev/null; then
    best_b=""
    for ((i = 1; i <= RUNS; i++)); do
      t=$(timeit "${pin[@]}" b3sum --num-threads 1 "$WORK"/src-big/*)
      best_b=$(fmin "$best_b" "$t")
    done
    b3_gbs=$(fdiv "$(awk -v b="$big_total" 'BEGIN { print b / 1e9 }')" "$best_b")
    HASH_LINES+=("$(printf '%-44s | %8s s | %6s GB/s | %s' "b3sum --num-threads 1 ($(b3sum --version))" \
      "$best_b" "$b3_gbs" "omnisync/b3sum speed $(fdiv "$omni_gbs" "$b3_gbs")")")
  else
    HASH_LINES+=("b3sum not installed: comparison skipped (apt-get install -y b3sum)")
  fi
}
if want hash; then hash_bench; fi

echo
echo "== results (seconds, best of $RUNS; lower is better)"
printf '%-44s | %10s | %8s | %8s | %14s | %-16s | %s\n' \
  workload "omnisync s" "rsync s" "cp -a s" "omnisync/rsync" target result
printf '%s\n' "$(printf '%.0s-' {1..125})"
if ((${#ROWS[@]})); then printf '%s\n' "${ROWS[@]}"; fi
if [[ -n "$FLOOR_LINE" ]]; then echo "$FLOOR_LINE"; fi
if want hash; then
  echo
  echo "== hashing ($((big_total / 1048576)) MiB)"
  printf '%s\n' "${HASH_LINES[@]}"
fi
