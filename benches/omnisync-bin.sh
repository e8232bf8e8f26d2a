# Sourced by the bench scripts: sets OMNI to the omnisync binary they time, which is
# $OMNISYNC_BIN when set (to compare builds, e.g. a copy of an older one), else the release
# build of this checkout, built first. Needs REPO, and the script's `step` and `die`.
if [[ -n "${OMNISYNC_BIN:-}" ]]; then
  OMNI="$OMNISYNC_BIN"
else
  step "building omnisync (cargo build --release)"
  (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
  TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
  [[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$REPO/$TARGET_DIR"
  OMNI="$TARGET_DIR/release/omnisync"
fi
[[ -x "$OMNI" ]] || die "no binary at $OMNI"
