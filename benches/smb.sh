#!/usr/bin/env bash
# SMB upload benchmark: omnisync (protocol = "smb") vs `smbclient` (put / mput) against the same
# Samba smbd on 127.0.0.1, same machine, same run (issue 6, "Performance").
#
#   benches/smb.sh                      # 1 GiB file, 1,000 x 1 MiB, 10,000 x 4 KiB
#   BENCH_SCALE=small benches/smb.sh    # everything 10x smaller, for a quick check
#
# Environment:
#   TMPDIR        where the temp data and the share go (default /var/tmp)
#   BENCH_SCALE   "small" shrinks every workload 10x
#   BENCH_RUNS    runs per tool and workload, best one kept (default 2)
#   BENCH_ONLY    the workloads to run, of "big mid small" (default all three)
#   OMNISYNC_BIN  a built omnisync to use instead of `cargo build --release`
#
# Targets from the issue: single large file >= 0.9x smbclient; small files faster than smbclient.
# Also timed, as references: smbclient signing (`--client-protection=sign`, as smb2 always
# does) on the large file, and smbclient writing each small or 1 MiB file under
# NAME.omnisync-partial and renaming it (the per-file work the SPEC asks of omnisync).
# omnisync runs mode = "mirror-upload" with a fresh state folder and an empty remote folder every
# run (a first sync: scan, plan, transfer, set mtimes, rename partials into place). smbclient
# runs `put` / `prompt off; mput *` with SMB3 into an empty folder. Needs root (it starts smbd as
# a private instance and adds the system user `omnitest` when missing); installs nothing:
# `apt-get install samba smbclient` first (scripts/test.sh does).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE="${BENCH_SCALE:-full}"
RUNS="${BENCH_RUNS:-2}"
if [[ "$SCALE" == "small" ]]; then DIV=10; else DIV=1; fi
BIG_BYTES=$((1024 * 1024 * 1024 / DIV))
MID_FILES=$((1000 / DIV))             # 1 MiB each
SMALL_FILES=$((10000 / DIV))          # 4 KiB each
PW="omnisync-bench-Pw-1"
USER_NAME=omnitest

die() { echo "smb bench: $*" >&2; exit 1; }
step() { printf '== [%4ds] %s\n' "$SECONDS" "$*" >&2; }

[[ $(id -u) -eq 0 ]] || die "run as root (it starts a private smbd)"
for b in /usr/sbin/smbd smbclient smbpasswd; do
  command -v "$b" >/dev/null 2>&1 || die "$b is missing: apt-get install -y samba smbclient"
done
id "$USER_NAME" >/dev/null 2>&1 || useradd -m -d /home/$USER_NAME -s /bin/bash $USER_NAME

# shellcheck source=benches/omnisync-bin.sh
source "$REPO/benches/omnisync-bin.sh"

BASE_TMP="${TMPDIR:-/var/tmp}"
need=$((3 * (BIG_BYTES + MID_FILES * 1048576 + SMALL_FILES * 4096)))
avail=$(($(df --output=avail -k "$BASE_TMP" | tail -1) * 1024))
((avail > need)) || die "$BASE_TMP has $((avail >> 20)) MiB free, the benchmark needs $((need >> 20)) MiB"
WORK="$(mktemp -d "$BASE_TMP/omnisync-smb.XXXXXX")"
chmod 755 "$WORK"
SMBD_PID=""
cleanup() {
  local rc=$?
  [[ -n "$SMBD_PID" ]] && kill "$SMBD_PID" 2>/dev/null && wait "$SMBD_PID" 2>/dev/null || true
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# --- a private smbd (the recipe of ../shared/TESTING.md) ---
D="$WORK/smbd"
mkdir -p "$D"/{share,private,lock,state,cache,pid,log,ncalrpc,bind-dns}
chown $USER_NAME:$USER_NAME "$D/share"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$D/smb.conf" <<EOF
[global]
  server role = standalone server
  workgroup = WORKGROUP
  interfaces = 127.0.0.1
  bind interfaces only = yes
  smb ports = $PORT
  disable netbios = yes
  server min protocol = SMB2_02
  server max protocol = SMB3_11
  security = user
  map to guest = never
  passdb backend = tdbsam:$D/private/passdb.tdb
  private dir = $D/private
  lock directory = $D/lock
  state directory = $D/state
  cache directory = $D/cache
  pid directory = $D/pid
  ncalrpc dir = $D/ncalrpc
  binddns dir = $D/bind-dns
  log file = $D/log/log.%m
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  server services = -nbt
[share]
  path = $D/share
  read only = no
  valid users = $USER_NAME
EOF
printf '%s\n%s\n' "$PW" "$PW" | smbpasswd -c "$D/smb.conf" -s -a $USER_NAME >/dev/null
# In a session of its own: smbd signals its whole process group when it shuts down, which
# would take this script with it.
setsid /usr/sbin/smbd -s "$D/smb.conf" --foreground --no-process-group --debug-stdout >"$D/smbd.out" 2>&1 &
SMBD_PID=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.05
done
step "smbd $(/usr/sbin/smbd --version) on 127.0.0.1:$PORT"

SMBC=(smbclient "//127.0.0.1/share" -p "$PORT" -U "$USER_NAME%$PW" -m SMB3)

# --- sources ---
step "creating sources"
SRC="$WORK/src"
WORKLOADS="${BENCH_ONLY:-big mid small}"
wants() { [[ " $WORKLOADS " == *" $1 "* ]]; }
mkdir -p "$SRC/big" "$SRC/mid" "$SRC/small"
if wants big; then head -c "$BIG_BYTES" /dev/urandom >"$SRC/big/big.bin"; fi
if wants mid; then
  for i in $(seq -w 1 "$MID_FILES"); do head -c 1048576 /dev/urandom >"$SRC/mid/m$i.bin"; done
fi
if wants small; then
  python3 - "$SRC/small" "$SMALL_FILES" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"s{i:05d}.dat"), "wb") as f:
        f.write(os.urandom(4096))
EOF
fi
sync

# An empty remote folder, and no writeback left from the last run: every run, of either tool,
# starts with the server's disk idle (a run that followed another one's 1 GiB of dirty pages
# took up to 5x as long, whichever tool it was).
fresh_remote() {
  rm -rf "$D/share/$1"
  mkdir "$D/share/$1"
  chown $USER_NAME:$USER_NAME "$D/share/$1"
  sync
}

# Seconds (float) that "$@" takes.
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$WORK/last.err" || { cat "$WORK/last.err" >&2; die "failed: $*"; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

omni_once() { # workload
  local w=$1 cfg="$WORK/omni-$1.toml"
  fresh_remote "o-$w"
  rm -rf "$WORK/state"
  cat >"$cfg" <<EOF
[agent]
state_dir = "$WORK/state"

[[job]]
name = "bench"
protocol = "smb"
mode = "mirror-upload"
host = "127.0.0.1"
port = $PORT
share = "share"
username = "$USER_NAME"
password = "$PW"
remote_path = "o-$w"
local_path = "$SRC/$w"
trash = false
max_delete = 1000000
EOF
  timed "$OMNI" --config "$cfg" run bench
}

smbc_once() { # workload [extra smbclient options]
  local w=$1
  shift
  fresh_remote "s-$w"
  if [[ "$w" == big ]]; then
    timed "${SMBC[@]}" "$@" -c "lcd $SRC/big; cd s-big; put big.bin"
  else
    timed "${SMBC[@]}" "$@" -c "lcd $SRC/$w; cd s-$w; prompt off; mput *"
  fi
}

# smbclient doing the work the SPEC asks of omnisync for each new file: written under
# NAME.omnisync-partial, then renamed (without -f: a name that appeared is not replaced) to
# NAME. On Samba every new name costs a case-insensitive scan of the folder, so this shows what
# the partial name alone costs any client.
smbc_partial_once() { # workload
  local w=$1 f
  fresh_remote "p-$w"
  {
    echo "lcd $SRC/$w"
    echo "cd p-$w"
    for f in "$SRC/$w"/*; do
      f=${f##*/}
      echo "put $f $f.omnisync-partial"
      echo "rename $f.omnisync-partial $f"
    done
  } >"$WORK/partial-$w.cmds"
  timed sh -c '"$@" <"$0"' "$WORK/partial-$w.cmds" "${SMBC[@]}"
}

min() { if [[ -z "$1" ]] || (($(echo "$2 < $1" | bc -l))); then echo "$2"; else echo "$1"; fi; }

verify() { # workload
  diff -rq "$SRC/$1" "$D/share/o-$1" >/dev/null || die "omnisync's $1 copy differs from the source"
  diff -rq "$SRC/$1" "$D/share/s-$1" >/dev/null || die "smbclient's $1 copy differs from the source"
}

printf '\n%-22s %12s %12s %10s %10s %8s %14s %8s\n' workload "omnisync s" "smbclient s" "omni MiB/s" \
  "smbc MiB/s" ratio "smbc signed s" ratio
PARTIAL_ROWS=()
for w in $WORKLOADS; do
  case $w in
    big) label="1 x $((BIG_BYTES >> 20)) MiB"; bytes=$BIG_BYTES ;;
    mid) label="$MID_FILES x 1 MiB"; bytes=$((MID_FILES * 1048576)) ;;
    small) label="$SMALL_FILES x 4 KiB"; bytes=$((SMALL_FILES * 4096)) ;;
  esac
  # The tools take turns, so that a slow spell of the disk falls on both.
  # omnisync signs every message, as the smb2 crate always does once logged in; smbclient
  # signs only when the server requires it (this one does not). Its signed time, on the large
  # file, shows what signing costs (the small workloads are bound by the server's lookups).
  o="" s="" g=""
  for r in $(seq "$RUNS"); do
    step "$label: omnisync, run $r"
    o=$(min "$o" "$(omni_once $w)")
    step "$label: smbclient, run $r"
    s=$(min "$s" "$(smbc_once $w)")
    if [[ "$w" == big ]]; then
      step "$label: smbclient --client-protection=sign, run $r"
      g=$(min "$g" "$(smbc_once $w --client-protection=sign)")
    else
      step "$label: smbclient put to NAME.omnisync-partial + rename, run $r"
      p=$(min "${p:-}" "$(smbc_partial_once $w)")
    fi
  done
  if [[ -n "${p:-}" ]]; then
    diff -rq "$SRC/$w" "$D/share/p-$w" >/dev/null || die "smbclient's partial+rename $w copy differs"
    PARTIAL_ROWS+=("$(printf '%-22s %12.2f %22s %7.2fx' "$label" "$o" "$(printf '%.2f' "$p")" "$(echo "$p / $o" | bc -l)")")
  fi
  p=""
  verify $w
  # ratio > 1: omnisync is faster (smbclient time / omnisync time).
  if [[ -n "$g" ]]; then
    gr=$(printf '%.2fx' "$(echo "$g / $o" | bc -l)")
    g=$(printf '%.2f' "$g")
  else
    g="-" gr="-"
  fi
  printf '%-22s %12.2f %12.2f %10.0f %10.0f %7.2fx %14s %8s\n' "$label" "$o" "$s" \
    "$(echo "$bytes / 1048576 / $o" | bc -l)" "$(echo "$bytes / 1048576 / $s" | bc -l)" \
    "$(echo "$s / $o" | bc -l)" "$g" "$gr"
done
echo "(ratio = smbclient time / omnisync time; best of $RUNS runs; >1 means omnisync is faster)"
if ((${#PARTIAL_ROWS[@]})); then
  printf '\nsmbclient doing what the SPEC asks of omnisync per file (put to NAME.omnisync-partial, rename):\n'
  printf '%-22s %12s %22s %8s\n' workload "omnisync s" "smbclient partial s" ratio
  printf '%s\n' "${PARTIAL_ROWS[@]}"
fi
