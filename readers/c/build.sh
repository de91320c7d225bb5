#!/usr/bin/env bash
# Builds the C reader's test programs into readers/c/build with the sanitizers on.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
CFLAGS=(-std=c11 -Wall -Wextra -Werror -pedantic -O1 -g -fno-omit-frame-pointer
        -fsanitize=address,undefined -fno-sanitize-recover=all)
gcc "${CFLAGS[@]}" -o build/smdecode tests/smdecode.c
gcc "${CFLAGS[@]}" -o build/smopen tests/smopen.c
gcc "${CFLAGS[@]}" -o build/unit tests/unit.c tests/unit_portable.c
