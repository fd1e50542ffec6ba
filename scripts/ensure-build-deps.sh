#!/usr/bin/env bash
# The addon links HiGHS (the portfolio optimiser's solver), which the
# `highs-sys` crate compiles from C++ source with CMake and binds with bindgen
# (which loads libclang). On Debian-like Linux, install both when missing
# (apt-get update once, then apt-get install; sudo only when not root). Quick
# when they are there: two file checks. Elsewhere (macOS, Windows, no apt-get)
# it only says what the build needs, and the build reports anything missing.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# bindgen looks for the unversioned libclang.so that libclang-dev provides.
if [ -z "${LIBCLANG_PATH:-}" ] && ! compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null \
   && ! compgen -G '/usr/lib/*/libclang.so' >/dev/null; then
  missing+=(libclang-dev)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(uname -s)" != Linux ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-build-deps: building HiGHS needs CMake and libclang; not found: ${missing[*]}" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "ensure-build-deps: installing ${missing[*]} (to build HiGHS)" >&2
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
