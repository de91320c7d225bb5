//! Where the cross-language tests find the workspace and the repo's Python venv.

use std::path::{Path, PathBuf};

/// The workspace root (the tests crate's parent folder).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// The python of the repo's venv: `STRIDEMAP_PYTHON` (relative to the workspace, or absolute),
/// else the workspace's `.venv`. Panics with what to run when there is none.
pub fn python() -> PathBuf {
    let p = match std::env::var_os("STRIDEMAP_PYTHON") {
        Some(p) => workspace().join(p),
        None => workspace().join(".venv/bin/python"),
    };
    assert!(
        p.exists(),
        "no Python venv at {}: run `bash scripts/test.sh python` (which makes .venv) or set \
         STRIDEMAP_PYTHON",
        p.display()
    );
    p
}
