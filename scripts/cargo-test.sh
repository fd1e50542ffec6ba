#!/usr/bin/env bash
# The Rust tests, built for the host triple: `napi build` passes `--target`,
# so its artifacts live under target/<triple>/, and a plain `cargo test`
# (target/release/) would compile every dependency a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
exec cargo test --release --target "$host" "$@"
