//! Fixed records from outside (SPEC.md §2, §3): decoding never panics, the same bytes
//! decode the same at any alignment and with anything after the first 1024, the result is
//! what SPEC.md's rules taken literally say (the first broken rule with its values, or the
//! span), and every valid record round-trips through both encodings and the builder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stridemap_core::{RECORD_LEN, decode};
use stridemap_fuzz::{roundtrip, rules, spec};

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
    assert_eq!(
        roundtrip::span(&got),
        rules::fixed(bytes),
        "SPEC.md's rules"
    );
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
        Err(e) => roundtrip::check_error(&e),
    }
}
