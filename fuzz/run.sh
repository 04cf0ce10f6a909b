#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20: the CI smoke run;
# give 600 for a real session), on its seed corpus. New inputs that grow
# coverage go to a scratch corpus; crashes land in fuzz/artifacts/<target>/
# and the script fails. Keep a fixed crash input in fuzz/corpus/<target>/ so
# `cargo test` replays it (src/fuzzing.rs).
# Needs nightly Rust and cargo-fuzz; without them it says so and exits 0
# (the corpora still replay in `cargo test`).
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-20}"
if ! rustup toolchain list 2>/dev/null | grep -q nightly || ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: nightly Rust or cargo-fuzz missing: skipping the fuzz run (corpora replay in cargo test)"
  exit 0
fi
cargo +nightly fuzz build -O || exit 1
failed=0
for target in $(cargo +nightly fuzz list); do
  scratch="$(mktemp -d)"
  log="$(mktemp)"
  if cargo +nightly fuzz run -O "$target" "$scratch" "corpus/$target" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    echo "fuzz: $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)"
  else
    echo "fuzz: $target FAILED:"; tail -40 "$log"; failed=1
  fi
  rm -rf "$scratch" "$log"
done
exit $failed
