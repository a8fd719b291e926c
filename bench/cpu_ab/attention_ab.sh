#!/usr/bin/env bash
# In-process A/B of the CPU attention kernels of two source trees (see attention_ab.cpp):
#
#   bash bench/cpu_ab/attention_ab.sh REV_A REV_B [B T S H D AXIS ROUNDS]
#
# REV_A / REV_B: git revisions of this repository, or "worktree" for the files as they are now. The shape defaults
# to spatial attention 1x4x256, 8 heads of 64, 9 rounds; AXIS 0 spatial, 1 temporal. Threads: OMP_NUM_THREADS
# (default 1). Example (this session's packing prefetch): bash bench/cpu_ab/attention_ab.sh HEAD~1 worktree
set -euo pipefail
if [ $# -ne 2 ] && [ $# -ne 9 ]; then
  echo "usage: $0 REV_A REV_B [B T S H D AXIS ROUNDS]" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files="attention.h attention.cpp attention_tiles.inc half_types.h"
for side in A B; do
  rev=$([ $side = A ] && echo "$1" || echo "$2")
  mkdir -p "$work/$side"
  for f in $files; do
    if [ "$rev" = worktree ]; then
      cp "$repo/csrc/cpu/$f" "$work/$side/$f"
    else
      git -C "$repo" show "$rev:csrc/cpu/$f" > "$work/$side/$f" || { echo "$0: no csrc/cpu/$f at $rev" >&2; exit 2; }
    fi
  done
  # includable twice in one translation unit (inside namespaces va / vb): no #pragma once, local includes
  sed -i -e '/#pragma once/d' -e 's|"cpu/|"|' "$work/$side"/*
done
${CXX:-g++} -O3 -std=c++17 -fopenmp -Wno-psabi -DVA="$work/A" -DVB="$work/B" -o "$work/ab" "$repo/bench/cpu_ab/attention_ab.cpp"
shift 2
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(1 4 256 8 64 0 9)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$work/ab" "${args[@]}"
