#!/usr/bin/env bash
# FTP benchmark: first upload with omnisync vs `lftp mirror -R` and `rclone sync` (where
# installed), same parallelism, same vsftpd on 127.0.0.1, same run (issue 5, "Performance";
# target: at least as fast as lftp).
#
#   benches/ftp.sh                     # 1,000 x 1 MiB and 10,000 x 4 KiB, plain FTP
#   BENCH_TLS=1 benches/ftp.sh         # the same over explicit FTPS (AUTH TLS)
#   BENCH_SCALE=small benches/ftp.sh   # every workload 10x smaller
#
# Environment:
#   TMPDIR           where the temp data goes (default /var/tmp)
#   BENCH_RUNS       runs per tool and workload, taking turns, best one kept (default 3)
#   BENCH_PARALLEL   files in flight: omnisync `transfers`, lftp `mirror --parallel`, rclone
#                    `--transfers` (default 4)
#   BENCH_RCLONE     0 = leave rclone out (default: compared when `rclone` is on the PATH)
#   BENCH_LFTP_SAFE  0 = leave out "lftp safe" (lftp with a temp file, rename and mtime: the
#                    per-file work the SPEC asks of omnisync; default: timed too)
#   BENCH_TLS        1 = explicit FTPS with a self-signed certificate (both tools verify it)
#   BENCH_COUNT      1 = instead of timing, upload 1,000 x 4 KiB once per tool with vsftpd's
#                    protocol log on (log_ftp_protocol) and print the commands (= round trips)
#                    each tool sent per file, by verb
#   OMNISYNC_BIN     a built omnisync to use instead of `cargo build --release`
#
# Needs root (vsftpd logs in a system user, `omnibench`, created when missing; not the tests'
# `omnitest`, whose password the test harnesses reset while they run), vsftpd, lftp and
# openssl (scripts/apt-packages.txt). vsftpd runs in the foreground from a temp config on a free
# port and is stopped by its PID. Every run uploads into a fresh, empty server folder; omnisync
# gets a fresh state folder each time. All tools read a warm page cache.
#
# What each tool does per new file differs, so the times are not of equal work: omnisync writes
# NAME.omnisync-partial, sets its mtime and renames it into place only when nothing appeared at
# NAME; lftp writes NAME itself; rclone writes NAME itself and sets no mtime (vsftpd offers no
# MFMT). Over FTPS omnisync and lftp verify the server's certificate; rclone 1.60 has no option
# for a CA file, so it runs with no_check_certificate.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${BENCH_RUNS:-3}"
PAR="${BENCH_PARALLEL:-4}"
TLS="${BENCH_TLS:-0}"
if [[ "${BENCH_SCALE:-full}" == "small" ]]; then DIV=10; else DIV=1; fi
BIG_FILES=$((1000 / DIV))   # 1 MiB each, 10 folders
SMALL_FILES=$((10000 / DIV)) # 4 KiB each, 100 folders

die() { echo "ftp-bench: $*" >&2; exit 1; }
step() { printf '== [%4ds] %s\n' "$SECONDS" "$*"; }

[[ $(id -u) -eq 0 ]] || die "run as root (vsftpd logs in the system user omnibench)"
for b in /usr/sbin/vsftpd lftp openssl; do
  command -v "$b" >/dev/null 2>&1 || die "$b is missing: apt-get install -y vsftpd lftp openssl"
done

# shellcheck source=benches/omnisync-bin.sh
source "$REPO/benches/omnisync-bin.sh"

BASE_TMP="${TMPDIR:-/var/tmp}"
# The sources and every run's upload (kept until the end), for up to three tools.
need=$(((3 * RUNS + 1) * (BIG_FILES + SMALL_FILES * 4 / 1024) * 1048576))
avail=$(($(df --output=avail -k "$BASE_TMP" | tail -1) * 1024))
((avail > need)) || die "$BASE_TMP has $((avail >> 20)) MiB free, the benchmark needs $((need >> 20)) MiB"
WORK="$(mktemp -d "$BASE_TMP/omnisync-ftpbench.XXXXXX")"
chmod 755 "$WORK"
VSFTPD_PID=""
cleanup() {
  local rc=$?
  [[ -n "$VSFTPD_PID" ]] && kill "$VSFTPD_PID" 2>/dev/null || true
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# --- server
BUSER=omnibench
id "$BUSER" >/dev/null 2>&1 || useradd -m -d "/home/$BUSER" -s /bin/bash "$BUSER"
PW="bench-$RANDOM-$RANDOM"
echo "$BUSER:$PW" | chpasswd
printf '%s\n' "$PW" >"$WORK/pw"
chmod 600 "$WORK/pw"
mkdir -p "$WORK/srv" /var/run/vsftpd/empty
chown "$BUSER": "$WORK/srv"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=0
for _ in $(seq 50); do
  p=$((10000 + RANDOM % 22000)) # below the ephemeral ports (32768-60999)
  if port_free "$p"; then PORT=$p; break; fi
done
((PORT)) || die "no free port found"
tls_conf="ssl_enable=NO"
if [[ "$TLS" == 1 ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=127.0.0.1' \
    -addext 'subjectAltName=IP:127.0.0.1' -addext 'basicConstraints=critical,CA:FALSE' \
    -addext 'keyUsage=critical,digitalSignature,keyEncipherment' \
    -addext 'extendedKeyUsage=serverAuth' \
    -keyout "$WORK/ftp.key" -out "$WORK/ftp.crt" 2>/dev/null
  chmod 600 "$WORK/ftp.key"
  tls_conf="ssl_enable=YES
allow_anon_ssl=NO
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
ssl_ciphers=HIGH
rsa_cert_file=$WORK/ftp.crt
rsa_private_key_file=$WORK/ftp.key"
fi
COUNT="${BENCH_COUNT:-0}"
log_conf="xferlog_enable=NO"
if [[ "$COUNT" == 1 ]]; then
  log_conf="xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=$WORK/vsftpd.log"
fi
cat >"$WORK/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$PORT
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
pam_service_name=vsftpd
pasv_enable=YES
pasv_address=127.0.0.1
port_enable=NO
connect_from_port_20=NO
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
use_localtime=NO
$log_conf
$tls_conf
EOF
/usr/sbin/vsftpd "$WORK/vsftpd.conf" &
VSFTPD_PID=$!
for _ in $(seq 1000); do port_free "$PORT" || break; sleep 0.01; done
port_free "$PORT" && die "vsftpd did not start"

# --- data
make_tree() { # dir files folders bytes: random content, `files / folders` per folder
  local dir=$1 n=$2 folders=$3 bytes=$4 i
  for ((i = 0; i < folders; i++)); do
    mkdir -p "$dir/d$i"
    head -c $((n / folders * bytes)) /dev/urandom | split -b "$bytes" -a 4 -d - "$dir/d$i/f"
  done
}
step "creating $BIG_FILES x 1 MiB and $SMALL_FILES x 4 KiB"
make_tree "$WORK/big" "$BIG_FILES" 10 $((1 << 20))
make_tree "$WORK/small" "$SMALL_FILES" 100 4096

scheme=ftp
[[ "$TLS" == 1 ]] && scheme=ftps
omni_run() { # src dst-folder-name [download: remote folder name -> local folder]
  local src=$1 dst=$2 mode=upload remote="$WORK/srv/$2"
  if [[ "${3:-}" == download ]]; then mode=download remote="$WORK/srv/$1" src="$WORK/$2"; fi
  rm -rf "$WORK/state"
  cat >"$WORK/omnisync.toml" <<EOF
[agent]
state_dir = "$WORK/state"

[[job]]
name = "bench"
protocol = "$scheme"
mode = "$mode"
host = "127.0.0.1"
port = $PORT
username = "$BUSER"
password_file = "$WORK/pw"
remote_path = "$remote"
local_path = "$src"
transfers = $PAR
trash = false
EOF
  [[ "$TLS" == 1 ]] && echo "tls_ca_file = \"$WORK/ftp.crt\"" >>"$WORK/omnisync.toml"
  "$OMNI" --config "$WORK/omnisync.toml" run bench >/dev/null 2>"$WORK/omni.err" ||
    die "omnisync failed: $(cat "$WORK/omni.err")
$("$OMNI" --config "$WORK/omnisync.toml" log --job bench --action error --limit 20 2>&1)"
}
lftp_run() { # src dst-folder-name [download: remote folder name -> local folder]
  local src=$1 dst=$2 tls_cmds="set ftp:ssl-allow no;" how="mirror -R --parallel=$PAR --no-perms $1 $WORK/srv/$2"
  [[ "${3:-}" == download ]] && how="mirror --parallel=$PAR --no-perms $WORK/srv/$1 $WORK/$2"
  # lftp 4.9.2 (GnuTLS) over TLS 1.3 loses uploads against vsftpd 3.0.3: vsftpd answers some
  # data connections' end with "426 Failure reading network stream" (GnuTLS: "The TLS
  # connection was non-properly terminated"), and lftp gives up on the file. Over TLS 1.2 every
  # file arrives, so lftp is held to TLS 1.2 (as omnisync holds itself: see tls_config in
  # src/remote/ftp.rs). vsftpd keeps its default require_ssl_reuse=YES: every data connection
  # resumes the control connection's TLS session.
  [[ "$TLS" == 1 ]] && tls_cmds="set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file $WORK/ftp.crt; set ssl:verify-certificate yes; set ssl:priority NORMAL:-VERS-TLS1.3;"
  lftp -u "$BUSER,$PW" -p "$PORT" \
    -e "$tls_cmds set net:max-retries 1; ${LFTP_EXTRA:-} $how; quit" \
    127.0.0.1 >/dev/null
}
# lftp made to do what the SPEC asks of omnisync for each file: written under a temporary name
# and renamed into place (xfer:use-temp-file), and given the source's mtime (vsftpd's MDTM with
# a time; lftp's SITE UTIME variants are refused there). Not the issue's peer (that is lftp as it
# comes): it shows what the same safety costs lftp on this server.
lftpsafe_run() { LFTP_EXTRA="set xfer:use-temp-file yes; set ftp:use-mdtm-overloaded yes;" lftp_run "$@"; }
SAFE="${BENCH_LFTP_SAFE:-1}"
RCLONE=0
if [[ "${BENCH_RCLONE:-1}" != 0 ]]; then
  if command -v rclone >/dev/null 2>&1; then RCLONE=1; else echo "== rclone is not installed: left out (apt-get install -y rclone)"; fi
fi
rclone_run() { # src dst-folder-name: the remote `bench` from environment variables, no config file
  local tls_env=()
  # rclone 1.60 (Go crypto/tls) over TLS 1.3 cannot log in to vsftpd 3.0.3 at all: the server
  # answers the handshake with an "illegal parameter" alert. Over TLS 1.2 it works, as for
  # lftp above (disable_tls13 is rclone's own workaround for such servers).
  [[ "$TLS" == 1 ]] && tls_env=(RCLONE_CONFIG_BENCH_EXPLICIT_TLS=true RCLONE_CONFIG_BENCH_NO_CHECK_CERTIFICATE=true
    RCLONE_CONFIG_BENCH_DISABLE_TLS13=true)
  env RCLONE_CONFIG_BENCH_TYPE=ftp RCLONE_CONFIG_BENCH_HOST=127.0.0.1 RCLONE_CONFIG_BENCH_PORT="$PORT" \
    RCLONE_CONFIG_BENCH_USER="$BUSER" RCLONE_CONFIG_BENCH_PASS="$RCLONE_PASS" "${tls_env[@]}" \
    rclone --config "$WORK/rclone.conf" sync "$1" "bench:$WORK/srv/$2" \
    --transfers "$PAR" --checkers "$PAR" 2>"$WORK/rclone.err" >/dev/null ||
    die "rclone failed: $(tail -5 "$WORK/rclone.err")"
}
if ((RCLONE)); then
  : >"$WORK/rclone.conf"
  RCLONE_PASS=$(rclone obscure "$PW")
fi

# Files and bytes of a tree: a run counts only when both match the source (a tool that gave up
# on a file may leave it short).
count() { find "$1" -type f ! -path '*/.omnisync/*' -printf '%s\n' | awk '{ n++; b += $1 } END { print n + 0, b + 0 }'; }

# One run of `tool` uploading `src`, checked and timed: prints the seconds.
timed_run() { # tool src dst-folder-name
  local tool=$1 src=$2 dst=$3 t0 t1
  # Every run starts with the disk idle: no writeback left from the run before. Uploads are
  # kept until the end: deleting 10,000 files just before the next tool creates as many made
  # ext4 skip the freed inodes (see benches/e2e.sh, BENCH_SETTLE) and slowed whoever came next.
  sync
  t0=$(date +%s.%N)
  "${tool}_run" "$src" "$dst"
  t1=$(date +%s.%N)
  [[ $(count "$WORK/srv/$dst") == $(count "$src") ]] ||
    die "$tool: $dst is incomplete (files, bytes: $(count "$WORK/srv/$dst"), not $(count "$src"))"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
min() { awk -v t="$1" -v b="$2" 'BEGIN { print (b == "" || t < b) ? t : b }'; }

if [[ "$COUNT" == 1 ]]; then
  # Commands each tool sent per file: every command is one round trip (the 150 + 226 of a
  # transfer count once, as its STOR). Logins and the scan are included, spread over the files.
  n=$((1000 / DIV))
  step "creating $n x 4 KiB for the count"
  make_tree "$WORK/count" "$n" 10 4096
  echo "== commands per file, $n x 4 KiB in 10 folders, $scheme, parallel $PAR (vsftpd log_ftp_protocol)"
  per_file() { # tool direction
    sleep 0.5 # the session processes flush their log lines
    grep -o 'FTP command: Client "[^"]*", "[A-Za-z]*' "$WORK/vsftpd.log" | awk -F'"' '{ print toupper($4) }' |
      sort | uniq -c | sort -rn |
      awk -v n="$n" -v t="$1 $2" '{ total += $1; by = by sprintf(" %s %.2f", $2, $1 / n) }
        END { printf "%-14s %6.2f per file:%s\n", t, total / n, by }'
  }
  uploaders="omni lftp"
  ((RCLONE)) && uploaders+=" rclone"
  [[ "$SAFE" == 1 ]] && uploaders+=" lftpsafe"
  for tool in $uploaders; do
    : >"$WORK/vsftpd.log"
    "${tool}_run" "$WORK/count" "count-$tool"
    [[ $(count "$WORK/srv/count-$tool") == $(count "$WORK/count") ]] || die "$tool: count-$tool is incomplete"
    per_file "$tool" upload
  done
  for tool in omni lftp; do
    : >"$WORK/vsftpd.log"
    "${tool}_run" "count-$tool" "got-$tool" download
    [[ $(count "$WORK/got-$tool") == $(count "$WORK/count") ]] || die "$tool: got-$tool is incomplete"
    per_file "$tool" download
  done
  exit 0
fi

rclone_v=""
((RCLONE)) && rclone_v="; $(rclone version | head -1)"
echo "== $(lftp --version | head -1)$rclone_v; omnisync $("$OMNI" --version | awk '{ print $2 }'); $scheme; parallel $PAR; best of $RUNS"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for w in big small; do
  step "workload $w"
  o="" l="" r="" f=""
  # The tools take turns, so that the other load on the machine falls on both alike.
  for ((i = 1; i <= RUNS; i++)); do
    t=$(timed_run omni "$WORK/$w" "$w-omni-$i")
    printf '   omnisync run %d: %.2f s\n' "$i" "$t" >&2
    o=$(min "$t" "$o")
    t=$(timed_run lftp "$WORK/$w" "$w-lftp-$i")
    printf '   lftp     run %d: %.2f s\n' "$i" "$t" >&2
    l=$(min "$t" "$l")
    if ((RCLONE)); then
      t=$(timed_run rclone "$WORK/$w" "$w-rclone-$i")
      printf '   rclone   run %d: %.2f s\n' "$i" "$t" >&2
      r=$(min "$t" "$r")
    fi
    if [[ "$SAFE" == 1 ]]; then
      t=$(timed_run lftpsafe "$WORK/$w" "$w-lftpsafe-$i")
      printf '   lftp, temp file + mtime, run %d: %.2f s\n' "$i" "$t" >&2
      f=$(min "$t" "$f")
    fi
  done
  results+=("$w $o $l ${r:--} ${f:--}")
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
ratio() { if [[ $2 == - ]]; then echo -; else awk -v o="$1" -v l="$2" 'BEGIN { printf "%.2f", o / l }'; fi; }
printf '%-28s %11s %8s %9s %14s %16s %12s %12s\n' "first upload ($scheme, x$PAR)" "omnisync s" "lftp s" "rclone s" "omnisync/lftp" "omnisync/rclone" "lftp safe s" "omni/safe"
for res in "${results[@]}"; do
  read -r w o l r f <<<"$res"
  if [[ $w == big ]]; then name="$BIG_FILES x 1 MiB"; else name="$SMALL_FILES x 4 KiB"; fi
  [[ $r == - ]] || r=$(printf '%.2f' "$r")
  fr=$(ratio "$o" "$f")
  [[ $f == - ]] || f=$(printf '%.2f' "$f")
  printf '%-28s %11.2f %8.2f %9s %14s %16s %12s %12s\n' "$name" "$o" "$l" "$r" "$(ratio "$o" "$l")" "$(ratio "$o" "$r")" "$f" "$fr"
done
[[ "$SAFE" == 1 ]] && echo "(lftp safe: lftp with xfer:use-temp-file and ftp:use-mdtm-overloaded, the partial name, rename and mtime omnisync's SPEC asks for; BENCH_LFTP_SAFE=0 leaves it out)"
