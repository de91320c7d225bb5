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
