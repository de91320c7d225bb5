//! Cross-process tests: the test binary re-executes itself as the other process.
//!
//! A test file declares one entry test that does nothing unless [`role`] says it runs as a
//! child; a test spawns children with [`spawn`], passing a role and values through the
//! environment (descriptors travel hex-encoded).
//!
//! ```ignore
//! #[test]
//! fn child_process_entry() {
//!     if let Some(role) = stridemap_tests::child::role() { run_role(&role) }
//! }
//! ```

use std::process::{Child, Command, Output, Stdio};

/// The environment variable carrying a child's role.
pub const ROLE_ENV: &str = "STRIDEMAP_TEST_CHILD_ROLE";

/// The role this process runs as, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// A value the parent passed (`STRIDEMAP_TEST_ARG_<name>`).
pub fn arg(name: &str) -> String {
    std::env::var(format!("STRIDEMAP_TEST_ARG_{name}"))
        .unwrap_or_else(|_| panic!("child started without argument {name}"))
}

/// Starts this test binary again, running only `entry_test` as `role` with `args`.
pub fn spawn(entry_test: &str, role: &str, args: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        entry_test,
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE_ENV, role)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in args {
        cmd.env(format!("STRIDEMAP_TEST_ARG_{k}"), v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Runs a child to completion and panics with its output unless it succeeded.
pub fn run(entry_test: &str, role: &str, args: &[(&str, String)]) -> Output {
    let out = spawn(entry_test, role, args)
        .wait_with_output()
        .expect("wait for child");
    assert!(
        out.status.success(),
        "child {role} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Hex encoding for descriptors in the environment.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`hex`].
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
