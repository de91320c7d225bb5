//! Every file under `tests/vectors/` decodes as its JSON says, and the files are exactly
//! what the generator in `stridemap_tests::vectors` makes.
//!
//! After changing the generator, rewrite the files with
//! `STRIDEMAP_BLESS=1 cargo test -p stridemap-tests --test vectors`.

use std::collections::BTreeSet;
use std::fs;

use stridemap_tests::vectors::{self, Form, decode_as, expected_json};

fn bless() -> bool {
    std::env::var_os("STRIDEMAP_BLESS").is_some()
}

#[test]
fn files_match_the_generator() {
    let dir = vectors::dir();
    let all = vectors::all();
    if bless() {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
    }
    for v in &all {
        let json = serde_json::to_string_pretty(&expected_json(v)).unwrap() + "\n";
        let (bin_path, json_path) = (
            dir.join(format!("{}.bin", v.name)),
            dir.join(format!("{}.json", v.name)),
        );
        if bless() {
            fs::write(&bin_path, &v.bytes).unwrap();
            fs::write(&json_path, &json).unwrap();
        }
        assert_eq!(
            fs::read(&bin_path).unwrap(),
            v.bytes,
            "{}: .bin differs; bless?",
            v.name
        );
        assert_eq!(
            fs::read_to_string(&json_path).unwrap(),
            json,
            "{}: .json differs; bless?",
            v.name
        );
    }
    // No stray files either.
    let names: BTreeSet<String> = all
        .iter()
        .flat_map(|v| [format!("{}.bin", v.name), format!("{}.json", v.name)])
        .collect();
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(names.contains(&name), "{name} is not made by the generator");
    }
}

#[test]
fn every_vector_breaks_exactly_the_rule_it_names() {
    let all = vectors::all();
    assert!(all.len() >= 20);
    for v in &all {
        match (decode_as(v.form, &v.bytes), v.rule) {
            (Ok(_), None) => {}
            (Err(e), Some(rule)) => assert_eq!(e.rule(), rule, "{}: {e}", v.name),
            (got, want) => panic!("{}: decoded to {got:?}, expected rule {want:?}", v.name),
        }
    }
    // Every rule has at least one vector.
    let covered: BTreeSet<&str> = all.iter().filter_map(|v| v.rule).collect();
    for n in 1..=22 {
        assert!(
            covered.contains(format!("R{n}").as_str()),
            "no vector for R{n}"
        );
    }
    for n in 1..=4 {
        assert!(
            covered.contains(format!("C{n}").as_str()),
            "no vector for C{n}"
        );
    }
}

#[test]
fn every_file_decodes_as_its_json_says() {
    if bless() {
        return; // the files are being rewritten by the test above
    }
    let dir = vectors::dir();
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        let want: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(path.with_extension("json")).unwrap())
                .unwrap();
        let form = if want["form"] == "compact" {
            Form::Compact
        } else {
            Form::Fixed
        };
        match decode_as(form, &bytes) {
            Ok(d) => {
                assert_eq!(want["valid"], true, "{path:?}");
                assert_eq!(want["fields"], vectors::fields_json(&d), "{path:?}");
                assert_eq!(want["derived"], vectors::derived_json(&d), "{path:?}");
            }
            Err(e) => {
                assert_eq!(want["valid"], false, "{path:?}");
                assert_eq!(want["rule"], e.rule(), "{path:?}");
            }
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} vectors");
}
