#!/usr/bin/env bash
# The whole test suite: the one command CI runs (.ci/run calls it) and the README shows.
#
# Every step installs what it needs (rustup targets and components, cargo-fuzz, a Python venv
# with numpy), caches it when present, and prints its own time. A step that cannot run fails
# the suite; nothing is skipped silently.
#
#   bash scripts/test.sh            everything
#   bash scripts/test.sh fmt clippy only the named steps (see `steps` below)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

steps=(fmt clippy test nostd miri doc python c)
[ $# -gt 0 ] && steps=("$@")

step_fmt() {
    ensure_component stable rustfmt
    cargo fmt --all -- --check
}

step_clippy() {
    ensure_component stable clippy
    cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
}

step_test() {
    # Some tests talk to Python (the CLI's .npy exports against numpy, live Rust <-> Python
    # interop in tests/tests/python_interop.rs, the readers' edge cases): the repo's .venv.
    ensure_venv
    STRIDEMAP_PYTHON="$PWD/.venv/bin/python" cargo test --workspace --all-features --locked
}

step_nostd() {
    # The core builds for a bare-metal target with no allocator, with and without serde.
    ensure_target stable thumbv7em-none-eabihf
    cargo build -p stridemap-core --locked --target thumbv7em-none-eabihf --no-default-features
    cargo build -p stridemap-core --locked --target thumbv7em-none-eabihf --no-default-features --features serde
}

step_miri() {
    # Isolation is off so that proptest can read the clock and the working directory.
    ensure_component nightly miri
    ensure_component nightly rust-src
    cargo +nightly miri setup >/dev/null
    MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-disable-isolation" \
        cargo +nightly miri test -p stridemap-core --features serde --locked
    # The views and sub-views of the std crate over heap buffers (the maps themselves are
    # outside Miri).
    MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-disable-isolation" \
        cargo +nightly miri test -p stridemap --test views --locked
}

step_doc() {
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked
}

step_python() {
    # The Python reader (readers/python): doctests and tests, in the repo's .venv.
    ensure_venv
    (cd readers/python && ../../.venv/bin/python -m pytest -q -p no:cacheprovider)
}


step_c() {
    # The C reader (readers/c): built with ASan and UBSan; its unit checks, then, driven from
    # pytest (hence the .venv), the vectors, a differential test against the Python reader and
    # the open-time checks on live files.
    ensure_venv
    bash readers/c/build.sh
    readers/c/build/unit
    STRIDEMAP_C_BUILT=1 .venv/bin/python -m pytest -q -p no:cacheprovider readers/c/tests
}

run_steps "${steps[@]}"
