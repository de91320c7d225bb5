//! The Python and C readers' edge cases (`python/tests/edges.py`: varint limits, UTF-8
//! corner cases, the 2^63 boundaries, …) decoded by the Rust core: all three readers agree on
//! each, beyond what the vectors pin. Needs the repository's venv (`$STRIDEMAP_PYTHON`).

use std::path::Path;
use std::process::Command;

use stridemap_core::{decode, decode_compact};

#[test]
fn rust_agrees_with_the_readers_edge_cases() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let python = std::env::var_os("STRIDEMAP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "needs the venv: run `bash scripts/test.sh python` or set STRIDEMAP_PYTHON"
    );
    let out = Command::new(&python)
        .args(["-c", "import json, edges; print(json.dumps([(n, f, d.hex(), e) for n, f, d, e in edges.all_edges()]))"])
        .current_dir(root.join("python/tests"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<(String, String, String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cases.len() > 50);
    let mut wrong = Vec::new();
    for (name, form, hex, expected) in &cases {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let got = if form == "compact" {
            decode_compact(&bytes)
        } else {
            decode(&bytes)
        };
        let got = match got {
            Ok(_) => "valid".to_string(),
            Err(e) => e.rule().to_string(),
        };
        if &got != expected {
            wrong.push(format!(
                "{form} {name}: Rust says {got}, the readers {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
