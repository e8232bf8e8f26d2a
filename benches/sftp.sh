#!/usr/bin/env bash
# SFTP benchmark: omnisync vs `rsync -e ssh`, OpenSSH's `sftp` client (batch mode) and
# `rclone sync`, all against one loopback OpenSSH sshd that this script starts, in one run
# (issue 3, "Performance"). Every SSH client is held to the same cipher: the server offers only
# aes128-gcm@openssh.com.
#
#   benches/sftp.sh                      # full size: ~2.5 GB of temp data, ~10-20 minutes
#   BENCH_SCALE=small benches/sftp.sh    # every workload ~10x smaller, ~2 minutes
#
# Run as root (it starts sshd and logs in as the system user `omnitest`, created when missing,
# as tests/common/sshd.rs does). Installs openssh-server, rsync and rclone with apt when missing.
#
# Environment:
#   TMPDIR          where the temp data goes (default /var/tmp); client and server share the disk
#   BENCH_SCALE     "small" shrinks every workload
#   BENCH_RUNS      timed runs of omnisync, rsync and the ssh pipe per workload, best kept
#                   (default 3); rclone and sftp, reference points only, run once
#   BENCH_RCLONE    0 skips rclone (its first upload of 10,000 files takes ~40 s)
#   BENCH_ONLY      workloads to run, comma-separated: big, small (first upload and the 1%
#                   re-run), noop (default: all three)
#   OMNISYNC_BIN    a built omnisync to use instead of `cargo build --release`
#   BENCH_OMNI_WRAP a command put before every omnisync run, to profile it (e.g.
#                   "perf record -g -o /tmp/omni.perf"; each run overwrites the last)
#
# Workloads and targets:
#   single 1 GiB upload            omnisync throughput >= 0.9 x `ssh host 'cat > /dev/null'`
#   first upload, 10,000 x 4 KiB   omnisync time <= rsync's
#   no-op re-run, 100,000 files    omnisync time <= 0.5 x rsync's
#   re-run after appending to 1% of the 10,000 files   omnisync time <= 0.5 x rsync's
# Two reference rows, timed the same way, show what the stock tools take for the part every
# tool must do: `ssh host 'cat > file'` (the pipe, with the server writing the file), and a
# local `find` while `find` runs on the server through ssh (both walks of the no-op, nothing else).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE="${BENCH_SCALE:-full}"
RUNS="${BENCH_RUNS:-3}"
WITH_RCLONE="${BENCH_RCLONE:-1}"
ONLY=",${BENCH_ONLY:-big,small,noop},"
want() { [[ "$ONLY" == *",$1,"* ]]; }
CIPHER="aes128-gcm@openssh.com"
USER_NAME="omnitest"

if [[ "$SCALE" == "small" ]]; then
  BIG_MIB=128 SMALL_FILES=1000 SMALL_DIRS=10 NOOP_FILES=10000 NOOP_DIRS=100
else
  BIG_MIB=1024 SMALL_FILES=10000 SMALL_DIRS=100 NOOP_FILES=100000 NOOP_DIRS=1000
fi
APPEND_FILES=$((SMALL_FILES / 100))

die() { echo "sftp-bench: $*" >&2; exit 1; }
step() { printf '== [%4ds] %s\n' "$SECONDS" "$*"; }

[[ $(id -u) -eq 0 ]] || die "run as root: the benchmark starts sshd and logs in as $USER_NAME"
missing=()
command -v /usr/sbin/sshd >/dev/null || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v rsync >/dev/null || missing+=(rsync)
[[ "$WITH_RCLONE" == 1 ]] && ! command -v rclone >/dev/null && missing+=(rclone)
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# shellcheck source=benches/omnisync-bin.sh
source "$REPO/benches/omnisync-bin.sh"

BASE_TMP="${TMPDIR:-/var/tmp}"
need=$(((BIG_MIB << 20) * 3 + (SMALL_FILES * 4096) * 8 + NOOP_FILES * 4096 * 4))
avail=$(($(df --output=avail -k "$BASE_TMP" | tail -1) * 1024))
((avail > need)) || die "$BASE_TMP has $((avail >> 20)) MiB free, the benchmark needs $((need >> 20)) MiB (set TMPDIR or BENCH_SCALE=small)"
WORK="$(mktemp -d "$BASE_TMP/omnisync-sftp-bench.XXXXXX")"
chmod 755 "$WORK"
SSHD_PID=""
descendants() { # PIDs below $1
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}
cleanup() {
  local rc=$?
  if [[ -n "$SSHD_PID" ]]; then
    # The listener and its sessions (its descendants), each by PID.
    local victims
    victims=$(descendants "$SSHD_PID")
    kill "$SSHD_PID" 2>/dev/null || true
    [[ -n "$victims" ]] && kill -KILL $victims 2>/dev/null || true
  fi
  step "removing $WORK"
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the server -------------------------------------------------------------------------------
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd -m -d "/home/$USER_NAME" -s /bin/bash "$USER_NAME"
fi
D="$WORK/sshd"
SRV="$WORK/srv"   # the server's folders, owned by omnitest
mkdir -p "$D" "$SRV" /run/sshd
chmod 0755 /run/sshd "$D"
chown "$USER_NAME:$USER_NAME" "$SRV"
ssh-keygen -q -t ed25519 -N '' -C host -f "$D/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$D/user_ed25519"
install -m 644 "$D/user_ed25519.pub" "$D/authorized_keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$D/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $D/host_ed25519
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $USER_NAME
MaxStartups 100
MaxSessions 100
Ciphers $CIPHER
Compression no
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -t -f "$D/sshd_config"
/usr/sbin/sshd -D -f "$D/sshd_config" -E "$D/sshd.log" &
SSHD_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.05
done
ssh-keyscan -p "$PORT" -t ed25519 127.0.0.1 >"$D/known_hosts" 2>/dev/null
[[ -s "$D/known_hosts" ]] || die "sshd did not start: $(cat "$D/sshd.log")"

# Options every OpenSSH client gets (sftp spells the port -P, ssh -p).
CLIENT_OPTS="-F /dev/null -i $D/user_ed25519 -o UserKnownHostsFile=$D/known_hosts \
-o StrictHostKeyChecking=yes -o BatchMode=yes -o Compression=no -c $CIPHER"
SSH_OPTS="-p $PORT $CLIENT_OPTS"
DEST="$USER_NAME@127.0.0.1"
# shellcheck disable=SC2086
ssh $SSH_OPTS "$DEST" true || die "ssh login failed: $(tail -5 "$D/sshd.log")"
# rclone: an sftp remote named X, configured from the environment only.
export RCLONE_CONFIG="$WORK/rclone.conf"
: >"$RCLONE_CONFIG"
export RCLONE_CONFIG_X_TYPE=sftp RCLONE_CONFIG_X_HOST=127.0.0.1 RCLONE_CONFIG_X_PORT="$PORT" \
  RCLONE_CONFIG_X_USER="$USER_NAME" RCLONE_CONFIG_X_KEY_FILE="$D/user_ed25519" \
  RCLONE_CONFIG_X_KNOWN_HOSTS_FILE="$D/known_hosts" RCLONE_CONFIG_X_CIPHERS="$CIPHER"

# --- helpers ----------------------------------------------------------------------------------
now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
fmin() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

# Time a command (stdout discarded, stderr kept in $WORK/last.err); prints seconds, or fails.
# Every timing starts with the disk idle, as in benches/ftp.sh and smb.sh (there, a run that
# followed another tool's writes took up to 5x as long, whichever tool it was).
timeit() {
  local t0 t1
  sync
  t0=$(now)
  if ! "$@" >/dev/null 2>"$WORK/last.err"; then
    echo "sftp-bench: command failed: $*" >&2
    sed 's/^/    /' "$WORK/last.err" >&2
    return 1
  fi
  t1=$(now)
  fsub "$t1" "$t0"
}

tally() { # files and bytes below a folder, ignoring omnisync's .omnisync folder
  find "$1" -path "$1/.omnisync" -prune -o -type f -printf '%s\n' |
    awk '{ n++; b += $1 } END { printf "%d files, %d bytes", n, b }'
}
check_same() { # src dst tool
  local a b
  a=$(tally "$1")
  b=$(tally "$2")
  [[ "$a" == "$b" ]] || die "$3 left a different tree: source $a, destination $b"
}

# omni_config NAME SRC REMOTE_DIR [EXTRA_LINE]: a mirror-upload job over sftp with its own
# state folder.
omni_config() {
  cat >"$WORK/$1.toml" <<EOF
[agent]
state_dir = "$WORK/state-$1"

[[job]]
name = "bench"
protocol = "sftp"
host = "127.0.0.1"
port = $PORT
username = "$USER_NAME"
private_key = "$D/user_ed25519"
known_hosts = "$D/known_hosts"
mode = "mirror-upload"
local_path = "$2"
remote_path = "$3"
trigger = "manual"
delete_orphans = true
${4:-}
EOF
  echo "$WORK/$1.toml"
}
# shellcheck disable=SC2086
omni() { ${BENCH_OMNI_WRAP:-} "$OMNI" --config "$1" run bench; }
# shellcheck disable=SC2086
rsync_up() { rsync -a -e "ssh $SSH_OPTS" "$1/" "$DEST:$2/"; }
# shellcheck disable=SC2086
sftp_put() { printf '%s\n' "$@" | sftp $CLIENT_OPTS -P "$PORT" -b - "$DEST" >/dev/null; }
rclone_up() { rclone sync "$1" "X:$2"; }
# shellcheck disable=SC2086
cat_to_file() { ssh $SSH_OPTS "$DEST" "cat > '$1'" <"$WORK/big.bin"; }
# shellcheck disable=SC2086
noop_floor() {
  find "$WORK/src-noop" -printf '%s %T@\n' >/dev/null &
  ssh $SSH_OPTS "$DEST" "find '$SRV/noop-omni' -printf '%s %T@\n'" >/dev/null
  wait
}
fresh() { # a new empty server folder
  mkdir -p "$1"
  chown "$USER_NAME:$USER_NAME" "$1"
}

make_files() { # DIR NFILES BYTES_EACH: random content
  mkdir -p "$1"
  head -c $(($2 * $3)) /dev/urandom | split -b "$3" -a 4 -d - "$1/f"
}
make_tree() { # ROOT NFILES NDIRS BYTES_EACH
  local per=$(($2 / $3)) d
  for ((d = 0; d < $3; d++)); do
    make_files "$(printf '%s/d%04d' "$1" "$d")" "$per" "$4"
  done
}

echo "== machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), AES-NI: $(grep -qw aes /proc/cpuinfo && echo yes || echo no), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== sshd on 127.0.0.1:$PORT offers $CIPHER only; $(ssh -V 2>&1); $(rsync --version | head -1)"
# (`rclone version | head -1` fails under pipefail when head closes the pipe first.)
echo "== $( [[ "$WITH_RCLONE" == 1 ]] && { rclone version 2>/dev/null | sed -n 1p; } || echo 'rclone skipped'); omnisync $("$OMNI" --version | awk '{ print $2 }')"
echo "== scale: $SCALE; best of $RUNS runs (rclone and sftp: one run); data under $WORK"

step "generating data"
if want big; then
  head -c $((BIG_MIB << 20)) /dev/urandom >"$WORK/big.bin"
  # How fast this disk takes durable writes (what each checkpoint's fsync waits for).
  DISK_MBS=$(dd if="$WORK/big.bin" of="$WORK/ddtest" bs=4M count=$((BIG_MIB / 8)) conv=fdatasync 2>&1 |
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") { printf "%.0f", $1 / $(i - 1) / 1e6 } }')
  rm -f "$WORK/ddtest"
fi
want small && make_tree "$WORK/src-small" "$SMALL_FILES" "$SMALL_DIRS" 4096
want noop && make_tree "$WORK/src-noop" "$NOOP_FILES" "$NOOP_DIRS" 64
sync

ROWS=()
# row NAME OMNI REF REF_NAME RATIO RATIO_DESC VERDICT OTHERS
row() { ROWS+=("$(printf '%-34s | %8s | %-24s | %6s | %-26s | %-4s | %s' "$@")"); }
verdict_le() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "n/a" && r + 0 <= t + 0) ? "PASS" : "FAIL" }'; }
verdict_ge() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "n/a" && r + 0 >= t + 0) ? "PASS" : "FAIL" }'; }

# --- 1. single large upload -------------------------------------------------------------------
if want big; then
name="single $BIG_MIB MiB upload"
step "$name"
cat "$WORK/big.bin" >/dev/null
best_o="" best_p="" best_r="" best_n="" best_f=""
for ((i = 1; i <= RUNS; i++)); do
  # shellcheck disable=SC2086
  t=$(timeit sh -c "ssh $SSH_OPTS $DEST 'cat > /dev/null' < '$WORK/big.bin'")
  best_p=$(fmin "$best_p" "$t")
  echo "   run $i: ssh cat>/dev/null $t s"
  mkdir -p "$WORK/big-src-$i"
  ln "$WORK/big.bin" "$WORK/big-src-$i/big.bin"
  fresh "$SRV/big-omni-$i"
  t=$(timeit omni "$(omni_config big-$i "$WORK/big-src-$i" "$SRV/big-omni-$i")")
  check_same "$WORK/big-src-$i" "$SRV/big-omni-$i" omnisync
  best_o=$(fmin "$best_o" "$t")
  echo "   run $i: omnisync        $t s"
  rm -rf "$SRV/big-omni-$i"
  # The same with checkpoints at most every 1 GiB: no fsync of the partial during the file, so
  # the transport alone is measured (a checkpoint fsyncs on the server, which the pipe into
  # /dev/null never pays; with a disk slower than the pipe, that bounds the default run).
  fresh "$SRV/big-omni-$i"
  t=$(timeit omni "$(omni_config big-nock-$i "$WORK/big-src-$i" "$SRV/big-omni-$i" 'chunk_size = "1GiB"')")
  check_same "$WORK/big-src-$i" "$SRV/big-omni-$i" omnisync
  best_n=$(fmin "$best_n" "$t")
  echo "   run $i: omnisync, no checkpoint fsync $t s"
  rm -rf "$SRV/big-omni-$i"
  fresh "$SRV/big-rsync-$i"
  t=$(timeit rsync_up "$WORK/big-src-$i" "$SRV/big-rsync-$i")
  best_r=$(fmin "$best_r" "$t")
  echo "   run $i: rsync -e ssh    $t s"
  rm -rf "$SRV/big-rsync-$i"
    # The same pipe with the server writing the file instead of dropping it: what every tool
  # must do on the server, without any protocol around it.
  fresh "$SRV/big-cat-$i"
  t=$(timeit cat_to_file "$SRV/big-cat-$i/big.bin")
  best_f=$(fmin "$best_f" "$t")
  echo "   run $i: ssh cat>file     $t s"
  rm -rf "$SRV/big-cat-$i"
done
fresh "$SRV/big-sftp"
t_s=$(timeit sftp_put "put $WORK/big.bin $SRV/big-sftp/big.bin")
echo "   sftp put        $t_s s"
rm -rf "$SRV/big-sftp"
t_c="n/a"
if [[ "$WITH_RCLONE" == 1 ]]; then
  fresh "$SRV/big-rclone"
  t_c=$(timeit rclone_up "$WORK/big-src-1" "$SRV/big-rclone")
  echo "   rclone sync     $t_c s"
  rm -rf "$SRV/big-rclone"
fi
mibs() { awk -v s="$1" -v m="$BIG_MIB" 'BEGIN { if (s + 0 > 0) printf "%.0f", m / s; else print "n/a" }'; }
ratio=$(fdiv "$best_p" "$best_o")
row "$name" "$best_o" "ssh cat pipe $best_p" "$ratio" "speed/pipe's >= 0.9" "$(verdict_ge "$ratio" 0.9)" \
  "MiB/s: omnisync $(mibs "$best_o"), pipe $(mibs "$best_p"), rsync $(mibs "$best_r"), sftp $(mibs "$t_s"), rclone $(mibs "$t_c")"
ratio=$(fdiv "$best_p" "$best_n")
row "  same, chunk_size = 1GiB (no fsync)" "$best_n" "ssh cat pipe $best_p" "$ratio" "speed/pipe's >= 0.9" "$(verdict_ge "$ratio" 0.9)" \
  "MiB/s: omnisync $(mibs "$best_n"); disk: $DISK_MBS MB/s with fdatasync"
ratio=$(fdiv "$best_p" "$best_f")
row "  ssh 'cat > file' (reference)" "$best_f" "ssh cat pipe $best_p" "$ratio" "the pipe writing the file" "" \
  "MiB/s: $(mibs "$best_f"); the pipe with the server writing the file, no protocol"
fi

# --- 2. first upload of many small files, 4. re-run after appending to 1% ---------------------
if want small; then
name="first upload $SMALL_FILES x 4 KiB"
step "$name ($SMALL_DIRS folders)"
best_o="" best_r=""
for ((i = 1; i <= RUNS; i++)); do
  fresh "$SRV/small-omni-$i"
  cfg=$(omni_config small-$i "$WORK/src-small" "$SRV/small-omni-$i")
  t=$(timeit omni "$cfg")
  check_same "$WORK/src-small" "$SRV/small-omni-$i" omnisync
  best_o=$(fmin "$best_o" "$t")
  echo "   run $i: omnisync     $t s"
  fresh "$SRV/small-rsync-$i"
  t=$(timeit rsync_up "$WORK/src-small" "$SRV/small-rsync-$i")
  check_same "$WORK/src-small" "$SRV/small-rsync-$i" rsync
  best_r=$(fmin "$best_r" "$t")
  echo "   run $i: rsync -e ssh $t s"
done
fresh "$SRV/small-sftp"
t_s=$(timeit sftp_put "put -r $WORK/src-small/. $SRV/small-sftp")
check_same "$WORK/src-small" "$SRV/small-sftp" sftp
echo "   sftp put -r  $t_s s"
rm -rf "$SRV/small-sftp"
t_c="n/a"
if [[ "$WITH_RCLONE" == 1 ]]; then
  fresh "$SRV/small-rclone"
  t_c=$(timeit rclone_up "$WORK/src-small" "$SRV/small-rclone")
  check_same "$WORK/src-small" "$SRV/small-rclone" rclone
  echo "   rclone sync  $t_c s"
fi
ratio=$(fdiv "$best_o" "$best_r")
row "$name" "$best_o" "rsync $best_r" "$ratio" "time/rsync's <= 1.0" "$(verdict_le "$ratio" 1.0)" \
  "seconds: sftp put -r $t_s, rclone $t_c"

name="re-run, $APPEND_FILES of $SMALL_FILES appended"
step "$name"
best_o="" best_r="" best_c=""
mapfile -t all_small < <(find "$WORK/src-small" -type f | sort)
for ((i = 1; i <= RUNS; i++)); do
  # Every round appends to a different 1% of the files; each tool then syncs its own copy.
  for ((k = 0; k < APPEND_FILES; k++)); do
    head -c 1000 /dev/urandom >>"${all_small[$(((k * 100 + i) % SMALL_FILES))]}"
  done
  t=$(timeit omni "$WORK/small-1.toml")
  check_same "$WORK/src-small" "$SRV/small-omni-1" omnisync
  best_o=$(fmin "$best_o" "$t")
  echo "   run $i: omnisync     $t s"
  t=$(timeit rsync_up "$WORK/src-small" "$SRV/small-rsync-1")
  check_same "$WORK/src-small" "$SRV/small-rsync-1" rsync
  best_r=$(fmin "$best_r" "$t")
  echo "   run $i: rsync -e ssh $t s"
  if [[ "$WITH_RCLONE" == 1 ]]; then
    t=$(timeit rclone_up "$WORK/src-small" "$SRV/small-rclone")
    best_c=$(fmin "$best_c" "$t")
    echo "   run $i: rclone sync  $t s"
  fi
done
ratio=$(fdiv "$best_o" "$best_r")
row "$name" "$best_o" "rsync $best_r" "$ratio" "time/rsync's <= 0.5" "$(verdict_le "$ratio" 0.5)" \
  "seconds: rclone ${best_c:-n/a}; sftp: no sync mode"
rm -rf "$SRV"/small-*
fi

# --- 3. no-op re-run over many files ----------------------------------------------------------
if want noop; then
name="no-op re-run, $NOOP_FILES files"
step "$name ($NOOP_DIRS folders)"
# Every tool's destination starts as a copy made on the server side (mtimes kept); each tool
# then syncs once untimed (omnisync records its base), and its re-runs are timed.
for tool in omni rsync rclone; do
  [[ "$tool" == rclone && "$WITH_RCLONE" != 1 ]] && continue
  cp -a "$WORK/src-noop" "$SRV/noop-$tool"
  chown -R "$USER_NAME:$USER_NAME" "$SRV/noop-$tool"
done
cfg=$(omni_config noop "$WORK/src-noop" "$SRV/noop-omni")
t=$(timeit omni "$cfg")
echo "   initial: omnisync $t s"
t=$(timeit rsync_up "$WORK/src-noop" "$SRV/noop-rsync")
echo "   initial: rsync    $t s"
if [[ "$WITH_RCLONE" == 1 ]]; then
  t=$(timeit rclone_up "$WORK/src-noop" "$SRV/noop-rclone")
  echo "   initial: rclone   $t s"
fi
best_o="" best_r="" best_c=""
for ((i = 1; i <= RUNS; i++)); do
  t=$(timeit omni "$cfg")
  best_o=$(fmin "$best_o" "$t")
  echo "   run $i: omnisync     $t s"
  t=$(timeit rsync_up "$WORK/src-noop" "$SRV/noop-rsync")
  best_r=$(fmin "$best_r" "$t")
  echo "   run $i: rsync -e ssh $t s"
done
if [[ "$WITH_RCLONE" == 1 ]]; then
  best_c=$(timeit rclone_up "$WORK/src-noop" "$SRV/noop-rclone")
  echo "   rclone sync  $best_c s"
fi
# What any no-op that looks at both sides over this connection must do, with stock tools: one
# `find` of the local tree and, at the same time, one `find` of the server's tree through a new
# ssh login, reading every entry's size and mtime and nothing else (no base, no plan, no SFTP).
best_f=""
for ((i = 1; i <= RUNS; i++)); do
  t=$(timeit noop_floor)
  best_f=$(fmin "$best_f" "$t")
  echo "   run $i: find + ssh find $t s"
done
if "$OMNI" --config "$cfg" run bench --json 2>/dev/null | grep -q '"action":"upload"'; then
  die "omnisync's no-op re-run transferred files"
fi
ratio=$(fdiv "$best_o" "$best_r")
row "$name" "$best_o" "rsync $best_r" "$ratio" "time/rsync's <= 0.5" "$(verdict_le "$ratio" 0.5)" \
  "seconds: rclone ${best_c:-n/a}; sftp: no sync mode"
ratio=$(fdiv "$best_f" "$best_r")
row "  find + ssh find (reference)" "$best_f" "rsync $best_r" "$ratio" "both walks, nothing else" "" \
  "both trees' sizes and mtimes read in parallel, over ssh for the server's; omnisync $(fdiv "$best_o" "$best_f") of it"
fi

echo
echo "== results (seconds, best of $RUNS; load now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-34s | %8s | %-24s | %6s | %-26s | %-4s | %s\n' workload "omnisync" "reference s" ratio target result others
printf '%s\n' "$(printf '%.0s-' {1..150})"
printf '%s\n' "${ROWS[@]}"
