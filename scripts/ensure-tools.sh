#!/usr/bin/env bash
# Installs the Debian packages the tests use that a fresh machine may lack, when
# they are missing (quick when nothing is): NumPy, for the CLI test that loads an
# exported .npy with numpy.load. Without it (no apt, no network) that one check is
# skipped and everything else still runs.
set -u
missing=()
python3 -c 'import numpy' 2>/dev/null || missing+=(python3-numpy)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" -ne 0 ] && sudo=sudo
echo "installing ${missing[*]}"
if ! { $sudo apt-get update -qq &&
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "could not install ${missing[*]}; the NumPy check of the CLI test will be skipped" >&2
fi
exit 0
