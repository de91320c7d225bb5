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

steps=(fmt clippy test attacks nostd msrv miri doc python joblib pyversions c fuzz)
[ $# -gt 0 ] && steps=("$@")

step_fmt() {
    ensure_component stable rustfmt
    cargo fmt --all -- --check
    # The fuzz crate is its own workspace.
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
}

step_clippy() {
    ensure_component stable clippy
    cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
}

step_test() {
    # Some tests talk to Python (the CLI's .npy exports against numpy, live Rust <-> Python
    # interop in tests/tests/python_interop.rs, the readers' edge cases): the repo's .venv.
    ensure_venv
    # The attacks run in their own step (next).
    STRIDEMAP_PYTHON="$PWD/.venv/bin/python" cargo test --workspace --all-features --locked \
        --exclude stridemap-attacks
}

step_attacks() {
    # The trust model under attack (attacks/, README "Trust model"): one regression test per
    # refused attack, against the stridemap binary, the crates, and the Python and C readers.
    # Output is shown: where the machine decides (namespaces, mounts, root) a test says which
    # variant it ran.
    ensure_venv
    cargo build -p stridemap-cli --locked
    STRIDEMAP_PYTHON="$PWD/.venv/bin/python" cargo test -p stridemap-attacks --locked \
        -- --nocapture
    bash readers/c/build.sh
    .venv/bin/python -m pytest -q -p no:cacheprovider -s attacks/readers
}

step_nostd() {
    # The core builds for a bare-metal target with no allocator, with and without serde.
    ensure_target stable thumbv7em-none-eabihf
    cargo build -p stridemap-core --locked --target thumbv7em-none-eabihf --no-default-features
    cargo build -p stridemap-core --locked --target thumbv7em-none-eabihf --no-default-features --features serde
}

step_msrv() {
    # The declared rust-version (Cargo.toml) builds everything in the workspace: libraries,
    # the CLI, tests, examples and benches, with the locked dependencies.
    local v
    v="$(msrv)"
    ensure_toolchain "$v"
    cargo +"$v" check --workspace --all-targets --all-features --locked
}

step_miri() {
    # Isolation is off so that proptest can read the clock and the working directory.
    ensure_toolchain "$NIGHTLY"
    ensure_component "$NIGHTLY" miri
    ensure_component "$NIGHTLY" rust-src
    export MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-disable-isolation"
    cargo +"$NIGHTLY" miri setup >/dev/null
    cargo +"$NIGHTLY" miri test -p stridemap-core --features serde --locked
    # Again on a big-endian machine (s390x), where the record's little-endian fields are
    # swapped and ValidDescriptor keeps native copies of its axes. Miri builds the target's
    # sysroot itself (no rustup target needed). A dev-dependency (criterion's alloca) compiles
    # C for the target with cc; Miri never runs that code, so the host compiler stands in for
    # a cross compiler.
    cargo +"$NIGHTLY" miri setup --target s390x-unknown-linux-gnu >/dev/null
    CC_s390x_unknown_linux_gnu=cc AR_s390x_unknown_linux_gnu=ar \
        cargo +"$NIGHTLY" miri test -p stridemap-core --features serde --locked \
        --target s390x-unknown-linux-gnu
    # The views and sub-views of the std crate over heap buffers (the maps themselves are
    # outside Miri).
    cargo +"$NIGHTLY" miri test -p stridemap --test views --locked
}

step_doc() {
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked
    # Again as docs.rs builds them: the pinned nightly with `--cfg docsrs` (doc_cfg badges),
    # into its own folder so the stable docs above stay as they are.
    ensure_toolchain "$NIGHTLY"
    RUSTDOCFLAGS="--cfg docsrs -D warnings" cargo +"$NIGHTLY" doc --workspace --all-features \
        --no-deps --locked --target-dir target/docsrs
}

step_python() {
    # The Python package (python/): reader and producer, doctests and tests, in the repo's .venv.
    ensure_venv
    (cd python && ../.venv/bin/python -m pytest -q -p no:cacheprovider)
}

step_joblib() {
    # joblib's own tests of Parallel and of its memmapping (test_parallel.py and
    # test_memmapping.py as the pinned joblib wheel in .venv ships them) with "stridemap" as
    # joblib's default backend, the way joblib's CI switches it: where they look, the backend
    # behaves as loky. The plugin scripts/joblib_suite/stridemap_joblib_suite.py supplies the
    # fixtures of joblib's repository conftest.py and lists each test that still fails, with the
    # reason (strict xfail: one that starts passing fails the step). It deselects, and says so,
    # the parametrizations that run only joblib's own backends: about 2 min on 2 busy cores,
    # 6 min with them (STRIDEMAP_JOBLIB_SUITE_ALL=1). The slowest tests are printed.
    ensure_venv
    local rc=0
    (cd scripts/joblib_suite && PYTHONPATH="$PWD" ../../.venv/bin/python -m pytest -q \
        -c pytest.ini -p no:cacheprovider -p stridemap_joblib_suite -rfEX --durations=5 \
        --pyargs joblib.test.test_parallel joblib.test.test_memmapping) || rc=$?
    # Explicit: run_steps calls a step inside `if`, where `set -e` does not apply.
    case $rc in
        0) ;;
        1) echo "joblib's tests failed with the stridemap backend (see above)" >&2; return 1 ;;
        5) echo "joblib's tests: none collected (is joblib's test package installed?)" >&2
           return 1 ;;
        *) echo "joblib's tests did not run to the end: pytest exit code $rc (2 interrupted," \
               "3 internal error, 4 usage error)" >&2; return 1 ;;
    esac
}

step_pyversions() {
    # The package's core tests (reader, producer, lifetime, errors, pools; not Dask, not the
    # benchmark smoke runs) and its doctests on the other supported Pythons found under pyenv
    # (3.11 is the `python` step's), each in its own cached venv with the pins of
    # python/requirements-pyX.Y.txt. A missing Python is said, not failed; a failing test fails.
    # Not here: Dask (dask and distributed are not installed), the benchmark's smoke run, and
    # the 10,000-task leak test of the pools (36 s a version); the `python` step runs them.
    local tests=(src/stridemap --ignore=src/stridemap/integrations/dask.py --ignore=src/stridemap/bench/dask.py
        tests --ignore=tests/test_dask.py --ignore=tests/test_pools_bench.py
        --deselect tests/test_pools_lifetime.py::test_ten_thousand_tasks_leave_no_growth)
    local v python
    for v in 3.10 3.12 3.13; do
        python="$(find_python "$v")"
        if [ -z "$python" ]; then
            echo "--- Python $v: not run: Python $v not installed (no pyenv version $v.*)"
            continue
        fi
        echo "--- Python $v: $python (not run here: test_dask.py, test_pools_bench.py," \
            "test_ten_thousand_tasks_leave_no_growth)"
        # Explicit returns: run_steps calls a step inside `if`, where `set -e` does not apply.
        ensure_pyvenv ".venv-py$v" "$python" "python/requirements-py$v.txt" || return 1
        (cd python && "../.venv-py$v/bin/python" -m pytest -q -p no:cacheprovider \
            "${tests[@]}") || { echo "Python $v: tests failed" >&2; return 1; }
    done
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

step_fuzz() {
    # Every cargo-fuzz target (fuzz/, its own workspace) for STRIDEMAP_FUZZ_SECONDS each
    # (default 30), one process at a time, seeded from the conformance vectors. Builds are
    # release with debug assertions, overflow checks and AddressSanitizer. Any crash, panic,
    # timeout or out-of-memory fails the step and names the input: minimize it with
    # `cargo +$NIGHTLY fuzz tmin TARGET INPUT` (NIGHTLY: scripts/lib.sh) and keep it as a test
    # (core/tests/fuzz_regressions.rs).
    local seconds=${STRIDEMAP_FUZZ_SECONDS:-30}
    ensure_toolchain "$NIGHTLY"
    ensure_cargo_fuzz
    cargo +"$NIGHTLY" fuzz build
    bash fuzz/seed-corpora.sh
    mkdir -p fuzz/artifacts
    local target log
    for target in $(cargo +"$NIGHTLY" fuzz list); do
        log=fuzz/artifacts/$target.log
        echo "--- $target: ${seconds} s (log: $log)"
        if ! cargo +"$NIGHTLY" fuzz run "$target" -- -max_total_time="$seconds" -timeout=10 \
            -dict=fuzz/dict/stridemap.dict -print_final_stats=1 >"$log" 2>&1; then
            grep -E -A8 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log" | head -40 >&2
            echo "fuzz target $target failed; the input is:" >&2
            sed -n 's/.*Test unit written to /    /p' "$log" >&2
            echo "    replay: cargo +$NIGHTLY fuzz run $target INPUT" >&2
            return 1
        fi
        grep -E "^Done [0-9]+ runs|^stat::number_of_executed_units|^stat::average_exec_per_sec" "$log" |
            sed 's/^/    /'
    done
}

run_steps "${steps[@]}"
