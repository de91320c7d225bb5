//! The README's code is the code that is compiled and run: its Rust example is
//! `shm/examples/producer_consumer.rs` verbatim (built by `cargo test`, run here).

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_rust_example_is_the_compiled_one() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let example =
        std::fs::read_to_string(root().join("shm/examples/producer_consumer.rs")).unwrap();
    let block = format!("```rust\n{}```", example);
    assert!(
        readme.contains(&block),
        "README.md's Rust example differs from shm/examples/producer_consumer.rs"
    );
    // The first two commands of the README are the demo and the test suite.
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("cargo run") || l.starts_with("bash "))
        .collect();
    assert!(
        commands[0].starts_with("cargo run --release --bin stridemap demo"),
        "{commands:?}"
    );
    assert!(
        commands[1].starts_with("bash scripts/test.sh"),
        "{commands:?}"
    );
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test.sh"),
        ".ci/run must call the README's test command"
    );
}

#[test]
fn the_rust_example_runs() {
    // `cargo test --workspace` builds the example next to this test binary; otherwise build it.
    let built = std::env::current_exe()
        .ok()
        .and_then(|t| Some(t.parent()?.parent()?.join("examples/producer_consumer")))
        .filter(|p| p.exists());
    let out = match built {
        Some(exe) => Command::new(exe).output(),
        None => Command::new(env!("CARGO"))
            .args([
                "run",
                "-q",
                "-p",
                "stridemap-shm",
                "--example",
                "producer_consumer",
            ])
            .current_dir(root())
            .output(),
    }
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        // Row i holds 3i, 3i + 1, 3i + 2: the first sum is 3, the last (i = 999) 8994.
        text.contains("row sums: (Some(3.0), Some(8994.0))"),
        "{text}"
    );
}

#[test]
fn the_python_example_is_the_one_the_interop_tests_run() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let reader = std::fs::read_to_string(root().join("python/README.md")).unwrap();
    let marker = "<!-- run verbatim by tests/tests/python_interop.rs (readme_example)";
    let after = &reader[reader.find(marker).expect("marker")..];
    let start = after.find("```python\n").expect("python block") + "```python\n".len();
    let block = &after[start..start + after[start..].find("```").expect("block end")];
    assert!(
        readme.contains(block),
        "README.md's Python example differs from python/README.md's"
    );
}
