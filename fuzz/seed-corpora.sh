#!/usr/bin/env bash
# Seeds the fuzz corpora from the committed conformance vectors (tests/vectors/): fixed
# records for `fixed_record`, compact forms for `compact`. The corpus folders are git-ignored
# and keep what the fuzzer found between local runs; seeding again only adds files.
#
#   bash fuzz/seed-corpora.sh
set -euo pipefail
cd "$(dirname "$0")"

mkdir -p corpus/fixed_record corpus/compact
n=0
for json in ../tests/vectors/*.json; do
    bin="${json%.json}.bin"
    if grep -q '"form": "compact"' "$json"; then
        target=compact
    else
        target=fixed_record
    fi
    cp "$bin" "corpus/$target/vector-$(basename "$bin")"
    n=$((n + 1))
done
echo "seeded the corpora with $n vectors"

# .npy headers as numpy writes them (format 1.0, 2.0 and 3.0), for `npy_header`.
mkdir -p corpus/npy_header
npy() { # version dict
    local dict="$2" len
    len=$((${#dict} + 1))
    if [ "$1" = 1 ]; then
        printf '\x93NUMPY\x01\x00'"$(printf '\\x%02x\\x%02x' $((len & 255)) $((len >> 8)))"'%s\n' "$dict"
    else
        printf '\x93NUMPY\x0'"$1"'\x00'"$(printf '\\x%02x\\x%02x\\x00\\x00' $((len & 255)) $((len >> 8)))"'%s\n' "$dict"
    fi
}
npy 1 "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }" >corpus/npy_header/v1-f8
npy 1 "{'descr': '|u1', 'fortran_order': True, 'shape': (5,), }" >corpus/npy_header/v1-u1-fortran
npy 2 "{'descr': '>i4', 'fortran_order': False, 'shape': (), }" >corpus/npy_header/v2-scalar
npy 3 "{'descr': '<c16', 'fortran_order': False, 'shape': (2, 0, 7), }" >corpus/npy_header/v3-empty
echo "seeded npy_header with 4 headers"
