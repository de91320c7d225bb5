# Shared helpers for the project's scripts: installing toolchain pieces once, timing steps.

# The pinned toolchains and tools. NIGHTLY (Miri, fuzz, the docs.rs build) is a dated nightly
# so that a new nightly cannot break the suite overnight: nightly-2026-05-20 is
# rustc 1.97.0-nightly (e50aa6fba 2026-05-19). Move it on deliberately, in its own commit.
NIGHTLY=nightly-2026-05-20
CARGO_FUZZ_VERSION=0.13.2

# msrv: the declared minimum Rust version, read from the workspace's Cargo.toml.
msrv() {
    sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml
}

# ensure_component TOOLCHAIN COMPONENT: rustup component add, only when missing.
ensure_component() {
    if ! rustup +"$1" component list --installed 2>/dev/null | grep -q "^$2"; then
        echo "installing rustup component $2 for $1"
        rustup +"$1" component add "$2"
    fi
}

# ensure_target TOOLCHAIN TARGET: rustup target add, only when missing.
ensure_target() {
    if ! rustup +"$1" target list --installed 2>/dev/null | grep -qx "$2"; then
        echo "installing rustup target $2 for $1"
        rustup +"$1" target add "$2"
    fi
}

# ensure_toolchain TOOLCHAIN: rustup toolchain install (minimal profile), only when missing.
ensure_toolchain() {
    if ! rustup toolchain list 2>/dev/null | grep -q "^$1"; then
        echo "installing rustup toolchain $1"
        rustup toolchain install "$1" --profile minimal
    fi
}

# ensure_cargo_fuzz: cargo install cargo-fuzz at CARGO_FUZZ_VERSION, unless that version is
# the one installed.
ensure_cargo_fuzz() {
    if ! cargo fuzz --version 2>/dev/null | grep -Fqw "$CARGO_FUZZ_VERSION"; then
        echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
    fi
}

# run_steps NAME...: runs step_NAME for each, timing it; stops at the first failure.
run_steps() {
    local total_start=$SECONDS
    local summary=()
    for s in "$@"; do
        if ! declare -F "step_$s" >/dev/null; then
            echo "unknown step: $s" >&2
            return 2
        fi
        echo
        echo "==> $s"
        local t=$SECONDS
        if ! "step_$s"; then
            echo "FAILED: step $s ($((SECONDS - t)) s)" >&2
            return 1
        fi
        summary+=("$(printf '%-10s %4d s' "$s" $((SECONDS - t)))")
    done
    echo
    echo "==> all steps passed in $((SECONDS - total_start)) s"
    printf '    %s\n' "${summary[@]}"
}

# ensure_venv: the repo's .venv with the pinned test tools and the Python reader (editable).
# Made once; made again when python's requirements or pyproject change, or when it
# does not import them from this work tree.
ensure_venv() {
    local stamp
    stamp="$(cat python/requirements-dev.txt python/pyproject.toml | sha256sum | cut -c1-16)"
    if [ "$(cat .venv/stridemap-stamp 2>/dev/null)" = "$stamp" ] &&
        .venv/bin/python -c "import numpy, pytest, stridemap, sys
sys.exit(not stridemap.__file__.startswith('$PWD/python/src/'))" 2>/dev/null; then
        return 0
    fi
    echo "setting up .venv (python/requirements-dev.txt, python)"
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r python/requirements-dev.txt
    .venv/bin/pip install --quiet --disable-pip-version-check -e python
    echo "$stamp" >.venv/stridemap-stamp
}

# find_python X.Y: prints the newest pyenv-installed CPython X.Y.Z interpreter (`pyenv root`
# when pyenv is on PATH, else ~/.pyenv), or nothing when there is none.
find_python() {
    local root=${PYENV_ROOT:-$HOME/.pyenv}
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root)"
    fi
    local v
    v="$(ls "$root/versions" 2>/dev/null | grep -E "^${1//./\\.}\.[0-9]+$" | sort -V | tail -n 1)"
    if [ -n "$v" ] && [ -x "$root/versions/$v/bin/python" ]; then
        echo "$root/versions/$v/bin/python"
    fi
}

# ensure_pyvenv DIR PYTHON REQUIREMENTS: like ensure_venv, a venv in DIR made with PYTHON, with
# REQUIREMENTS and the package (editable). Made again when the requirements, pyproject or the
# interpreter change, or when it does not import them from this work tree.
ensure_pyvenv() {
    local dir=$1 python=$2 reqs=$3 stamp
    stamp="$( (cat "$reqs" python/pyproject.toml; echo "$python") | sha256sum | cut -c1-16)"
    if [ "$(cat "$dir/stridemap-stamp" 2>/dev/null)" = "$stamp" ] &&
        "$dir/bin/python" -c "import numpy, pytest, stridemap, sys
sys.exit(not stridemap.__file__.startswith('$PWD/python/src/'))" 2>/dev/null; then
        return 0
    fi
    echo "setting up $dir ($reqs, python; $python)"
    # Explicit checks: run_steps calls a step inside `if`, where `set -e` does not apply.
    rm -rf "$dir" &&
        "$python" -m venv "$dir" &&
        "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" &&
        "$dir/bin/pip" install --quiet --disable-pip-version-check -e python &&
        echo "$stamp" >"$dir/stridemap-stamp" ||
        { echo "could not set up $dir with $reqs" >&2; return 1; }
}
