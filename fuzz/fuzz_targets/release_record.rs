//! Release records from outside (SPEC.md §6.2): decoding never panics, only the first 1024
//! bytes count at any alignment, and what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stridemap_core::{RECORD_LEN, Release};

fuzz_target!(|data: &[u8]| {
    let got = Release::decode(data);
    let mut shifted = Vec::with_capacity(data.len().min(RECORD_LEN) + 1);
    shifted.push(0);
    shifted.extend_from_slice(&data[..data.len().min(RECORD_LEN)]);
    assert_eq!(
        Release::decode(&shifted[1..]),
        got,
        "only the first 1024 bytes count"
    );
    if let Ok(r) = got {
        assert_eq!(&r.to_bytes()[..], &data[..RECORD_LEN]);
        assert!(
            stridemap_core::decode(data).is_err(),
            "a release decodes as a descriptor"
        );
    }
});
