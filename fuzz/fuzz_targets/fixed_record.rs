//! Fixed records from outside (SPEC.md §2, §3): decoding never panics, the same bytes
//! decode the same at any alignment and with anything after the first 1024, every error
//! names its rule, the naive model agrees on R20 to R22 and on every valid layout, and every
//! valid record round-trips through both encodings and the builder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stridemap_core::{RECORD_LEN, decode};
use stridemap_fuzz::{roundtrip, spec};

fuzz_target!(|data: &[u8]| {
    check(data);
    // A mutation almost always breaks the checksum (R4); the same record with a correct
    // one lets the mutations reach rules R5 to R22.
    if let Some(record) = data.first_chunk::<RECORD_LEN>() {
        let mut fixed = *record;
        let crc = spec::crc32c(&fixed[..1020]);
        fixed[1020..].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});

fn check(bytes: &[u8]) {
    let got = decode(bytes);
    let record = &bytes[..bytes.len().min(RECORD_LEN)];
    let mut shifted = Vec::with_capacity(record.len() + 1);
    shifted.push(0);
    shifted.extend_from_slice(record);
    assert_eq!(
        decode(&shifted[1..]),
        got,
        "only the first 1024 bytes count, anywhere"
    );
    match got {
        Ok(d) => roundtrip::check_valid(&d),
        Err(e) => roundtrip::check_error(&e, || {
            spec::record_geometry(record.try_into().expect("a whole record got this far"))
        }),
    }
}
