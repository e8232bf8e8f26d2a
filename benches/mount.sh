#!/usr/bin/env bash
# Benchmark of `omnisync mount` on the local backend, from a release build (run as root, needs
# /dev/fuse). Prints one table, each row "direct" vs "through the mount" and their ratio
# (mount speed / direct speed; 1.00x = as fast, the issue's target for reads is >= 0.50x):
#   - `ls -lR` of a 100,000-file tree through the mount vs directly on the remote folder;
#   - 1 GiB sequential read vs `cat` of the source (in the page cache): the first read (fetched
#     from the remote), a re-read (kernel page cache), a read after a remount (the mount's
#     on-disk cache, which a remount keeps) and O_DIRECT reads (the disk cache, no page cache).
# Timed figures are the best of 3 runs where a run can be repeated (not the first read).
# Usage: benches/mount.sh [path/to/omnisync]   (default: `cargo build --release` and use that)
# Needs ~3.2 GiB free under ${TMPDIR:-/tmp} (the source file and its cached copy).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 1 ]]; then
  B=$1
else
  cargo build --release --quiet
  B=target/release/omnisync
fi
FILES=${FILES:-100000}
T=$(mktemp -d "${TMPDIR:-/tmp}/omnisync-mountbench.XXXXXX")
PID=""
cleanup() {
  [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  grep -q " $T/mnt " /proc/mounts && umount -l "$T/mnt" || true
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/remote/tree" "$T/local" "$T/mnt"
python3 - "$T/remote/tree" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
        f.write(str(i))
PY
head -c 1G /dev/urandom > "$T/remote/big"
cat > "$T/omnisync.toml" <<TOML
[agent]
state_dir = "$T/state"

[[job]]
name = "bench"
protocol = "local"
mode = "download"
remote_path = "$T/remote"
local_path = "$T/local"
trigger = "manual"
TOML

mount_it() {
  "$B" --config "$T/omnisync.toml" mount bench "$T/mnt" --foreground --cache-size 2GiB \
    --cache-dir "$T/cache" 2>>"$T/mount.log" &
  PID=$!
  until grep -q " $T/mnt " /proc/mounts; do
    sleep 0.05
    kill -0 $PID || { cat "$T/mount.log"; exit 1; }
  done
}
unmount_it() {
  kill -TERM "$PID"
  wait "$PID"
  PID=""
}

secs() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
best3() { local b="" t; for _ in 1 2 3; do t=$(secs "$@"); if [[ -z $b ]] || (( $(echo "$t < $b" | bc) )); then b=$t; fi; done; echo "$b"; }
dd_direct() { dd if="$1" of=/dev/null bs=1M iflag=direct status=none; }
ROWS=()
# row NAME DIRECT_SECS MOUNT_SECS UNIT: UNIT "s" prints times, "MiB/s" prints 1 GiB throughput.
row() {
  local d m
  if [[ $4 == s ]]; then
    d=$(printf '%.2f s' "$2"); m=$(printf '%.2f s' "$3")
  else
    d=$(printf '%.0f MiB/s' "$(echo "1024 / $2" | bc -l)")
    m=$(printf '%.0f MiB/s' "$(echo "1024 / $3" | bc -l)")
  fi
  ROWS+=("$(printf '| %s | %s | %s | %.2fx |' "$1" "$d" "$m" "$(echo "$2 / $3" | bc -l)")")
}

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
t0=$(date +%s.%N)
mount_it
ready=$(echo "$(date +%s.%N) - $t0" | bc)

direct=$(best3 ls -lR "$T/remote/tree")
through=$(best3 ls -lR "$T/mnt/tree")
row "\`ls -lR\`, $FILES files" "$direct" "$through" s

cat "$T/remote/big" >/dev/null # the source in the page cache
src=$(best3 cat "$T/remote/big")
first=$(secs cat "$T/mnt/big") # fetched from the remote, into the disk cache
row "1 GiB first read (\`cat\`, fetched from the remote)" "$src" "$first" MiB/s
again=$(best3 cat "$T/mnt/big")
row "1 GiB re-read, same mount (\`cat\`, page cache)" "$src" "$again" MiB/s
odirect=$(best3 dd_direct "$T/mnt/big")
row "1 GiB O_DIRECT read (\`dd iflag=direct\`, disk cache)" "$src" "$odirect" MiB/s
unmount_it
mount_it
remount=$(secs cat "$T/mnt/big")
row "1 GiB read after a remount (\`cat\`, disk cache kept)" "$src" "$remount" MiB/s
reads=$(grep -E '^remote_reads' "$T/mnt/.omnisync/status")

echo "binary: $B ($(git rev-parse --short HEAD)); $(nproc) CPUs; load before: $LOAD0"
printf 'mount of %d files ready in %.2f s; after the remount: %s\n' "$FILES" "$ready" "$reads"
echo
echo "| 1 GiB = 1024 MiB; direct = the local folder | direct | through the mount | mount / direct |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
