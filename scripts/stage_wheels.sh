#!/usr/bin/env bash
# Downloads, on a machine with a package registry, the wheels that a GPU machine without one lacks (Python 3.12,
# manylinux x86_64) into .whl/ of this checkout (git-ignored), for scripts/gpu_suite.sh. Extra names are appended.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 jsonargparse==4.53.0 docstring-parser==0.18.0 \
  typeshed-client==2.15.0 av "$@"
echo "staged $(ls .whl | wc -l) wheels in .whl/"
