//! Inputs the fuzzers found, kept as tests, each with what went wrong.

use stridemap_core::{COMPACT_MAX_LEN, decode_compact};

/// `fuzz/fuzz_targets/compact.rs`, 2026-11-24: a compact form of minor version 3 with two
/// trailing bytes (the vector `compact_valid_newer_minor`). `decode_compact` keeps the encoded
/// minor version (3), but re-encoding writes 1.0 (the trailing fields are not known, so they
/// cannot be written again): the round trip gave an equal descriptor *except for its version*.
/// Re-encoding must give what a 1.0 reader sees: the same meaning, version 1.0.
#[test]
fn compact_of_a_newer_minor_reencodes_as_1_0() {
    let input = include_bytes!("../../tests/vectors/compact_valid_newer_minor.bin");
    let d = decode_compact(input).unwrap();
    assert_eq!(d.version(), (1, 3));
    let mut buf = [0u8; COMPACT_MAX_LEN];
    let again = decode_compact(d.encode_compact(&mut buf).unwrap()).unwrap();
    assert_eq!(again.version(), (1, 0));
    assert_eq!(again.to_builder().build(), d.to_builder().build());
    assert_eq!(
        (again.shape(), again.strides(), again.path()),
        (d.shape(), d.strides(), d.path())
    );
}
