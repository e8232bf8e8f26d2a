#!/usr/bin/env bash
# Benchmark of `omnisync mount` on the local backend (run as root, needs /dev/fuse):
#   1. `ls -lR` of a 100,000-file tree through the mount vs directly;
#   2. sequential read of a 1 GiB file already in the mount's cache vs `cat` of the source
#      (target: at least 0.5x the direct throughput).
# Usage: benches/mount.sh [path/to/omnisync]   (default target/release/omnisync, else debug)
# Needs ~2.2 GiB free under ${TMPDIR:-/tmp} (the source file and its cached copy).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-target/release/omnisync}
[[ -x $B ]] || B=target/debug/omnisync
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
"$B" --config "$T/omnisync.toml" mount bench "$T/mnt" --foreground --cache-size 2GiB \
  --cache-dir "$T/cache" 2>"$T/mount.log" &
PID=$!
t0=$(date +%s.%N)
until grep -q " $T/mnt " /proc/mounts; do sleep 0.05; kill -0 $PID || { cat "$T/mount.log"; exit 1; }; done
echo "binary: $B"
printf 'mount of %d files ready in %.2f s\n' "$FILES" "$(echo "$(date +%s.%N) - $t0" | bc)"

secs() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
direct=$(secs ls -lR "$T/remote/tree")
through=$(secs ls -lR "$T/mnt/tree")
printf 'ls -lR of %d files: direct %.3f s, through the mount %.3f s (%.1fx)\n' \
  "$FILES" "$direct" "$through" "$(echo "$through / $direct" | bc -l)"

cat "$T/mnt/big" > /dev/null                       # fills the cache
cat "$T/remote/big" > /dev/null                     # source in the page cache too
direct=$(secs cat "$T/remote/big")
through=$(secs cat "$T/mnt/big")
printf '1 GiB sequential read: direct %.0f MiB/s, through the mount (cached) %.0f MiB/s (%.2fx)\n' \
  "$(echo "1024 / $direct" | bc -l)" "$(echo "1024 / $through" | bc -l)" "$(echo "$direct / $through" | bc -l)"
# The same file opened again unchanged keeps the kernel's page cache; O_DIRECT reads bypass it
# and measure the mount's own on-disk chunk cache.
s=$(date +%s.%N); dd if="$T/mnt/big" of=/dev/null bs=1M iflag=direct status=none
through=$(echo "$(date +%s.%N) - $s" | bc)
printf '1 GiB O_DIRECT read through the mount (its disk cache): %.0f MiB/s (%.2fx of direct cat)\n' \
  "$(echo "1024 / $through" | bc -l)" "$(echo "$direct / $through" | bc -l)"
grep -E 'remote_reads|cache_hits|cache_bytes' "$T/mnt/.omnisync/status"
