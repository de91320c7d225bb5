//! Two processes, one file: writes through an `r+` mapping reach another process's mapping
//! while both are alive; writes through a `c` mapping never leave the writer.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use stridemap::OpenOptions;
use stridemap_core::{Builder, DType, Mode, Slice, ValidDescriptor, decode};
use stridemap_tests::child;

const ENTRY: &str = "child_process_entry";

/// Not a test of its own: the entry point children run (see `stridemap_tests::child`).
#[test]
fn child_process_entry() {
    let Some(role) = child::role() else { return };
    let desc = decode(&child::unhex(&child::arg("DESC"))).unwrap();
    let root = child::arg("ROOT");
    let mode = match role.as_str() {
        "writer" => Mode::ReadWrite,
        "private-writer" => Mode::CopyOnWrite,
        other => panic!("unknown role {other}"),
    };
    let mut m = OpenOptions::new()
        .allow_root(&root)
        .mode(mode)
        .open(&desc)
        .unwrap();
    // Write -1 into every element of the second row, through a reversed view for good measure.
    // The other process maps the same bytes meanwhile: a volatile view (no references).
    let mut v = m.volatile_view_mut::<f64>().unwrap();
    v.reborrow()
        .index_axis(0, 1)
        .unwrap()
        .slice_axis(0, Slice::REVERSED)
        .unwrap()
        .fill(-1.0);
    assert_eq!(v.get(&[1, 0]).unwrap(), -1.0);
}

fn fixture() -> (tempfile::TempDir, String, ValidDescriptor) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let path = root.join("shared.f64");
    let data: Vec<f64> = (0..12).map(f64::from).collect();
    fs::File::create(&path)
        .unwrap()
        .write_all(bytemuck::cast_slice(&data))
        .unwrap();
    let meta = fs::metadata(&path).unwrap();
    let desc = Builder::new(DType::parse("<f8").unwrap(), &[3, 4])
        .mode(Mode::ReadWrite)
        .file_len(meta.len())
        .identity(meta.dev(), meta.ino())
        .path(path.to_str().unwrap())
        .build()
        .unwrap();
    (dir, root.to_str().unwrap().to_string(), desc)
}

#[test]
fn r_plus_writes_reach_the_other_process() {
    let (_dir, root, desc) = fixture();
    // Map first: the change must appear in a mapping that already exists.
    let reader = OpenOptions::new().allow_root(&root).open(&desc).unwrap();
    // A path-named file another process writes: no reference-lending view without a promise.
    assert!(matches!(
        reader.view::<f64>(),
        Err(stridemap::ViewError::NotFrozen)
    ));
    let before = reader.volatile_view::<f64>().unwrap().to_vec();
    child::run(
        ENTRY,
        "writer",
        &[
            ("DESC", child::hex(&desc.to_bytes())),
            ("ROOT", root.clone()),
        ],
    );
    let after = reader.volatile_view::<f64>().unwrap().to_vec();
    assert_eq!(before[4..8], [4.0, 5.0, 6.0, 7.0]);
    assert_eq!(after[4..8], [-1.0; 4]);
    assert_eq!(after[..4], before[..4]);
    assert_eq!(after[8..], before[8..]);
}

#[test]
fn copy_on_write_writes_stay_in_the_writer() {
    let (_dir, root, desc) = fixture();
    let reader = OpenOptions::new().allow_root(&root).open(&desc).unwrap();
    let before = reader.volatile_view::<f64>().unwrap().to_vec();
    child::run(
        ENTRY,
        "private-writer",
        &[
            ("DESC", child::hex(&desc.to_bytes())),
            ("ROOT", root.clone()),
        ],
    );
    assert_eq!(reader.volatile_view::<f64>().unwrap().to_vec(), before);
    let fresh = OpenOptions::new()
        .allow_root(&root)
        .reuse_mappings(false)
        .open(&desc)
        .unwrap();
    assert_eq!(fresh.volatile_view::<f64>().unwrap().to_vec(), before);
}
