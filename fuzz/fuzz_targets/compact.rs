//! Compact forms from outside (SPEC.md §4): decoding never panics, the streaming decoder
//! agrees with postcard decoding the whole serde type, the result of every form that decodes
//! is what SPEC.md's rules taken literally say (C3, C4, R8 to R22), and every valid form
//! re-encodes (canonically, so never longer) and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stridemap_core::{COMPACT_MAX_LEN, DecodeError, VERSION_MAJOR, decode_compact};
use stridemap_fuzz::{roundtrip, rules};

fuzz_target!(|data: &[u8]| {
    let streaming = decode_compact(data);
    match roundtrip::owned_decode(data) {
        // The owned path decodes every field before it looks at the major version; the
        // streaming one reports R3 first, as SPEC.md orders it.
        Err(DecodeError::CompactMalformed) => assert!(
            matches!(
                streaming,
                Err(DecodeError::CompactMalformed | DecodeError::UnsupportedVersion { .. })
            ),
            "owned: C1, streaming: {streaming:?}"
        ),
        owned => assert_eq!(streaming, owned),
    }
    if let Some(c) = roundtrip::owned_compact(data)
        .ok()
        .filter(|c| c.major == VERSION_MAJOR)
    {
        assert_eq!(
            roundtrip::span(&streaming),
            rules::compact(&c),
            "SPEC.md's rules"
        );
    }
    match streaming {
        Ok(d) => {
            let mut buf = [0u8; COMPACT_MAX_LEN];
            let again = d
                .encode_compact(&mut buf)
                .expect("COMPACT_MAX_LEN suffices");
            // Minimal varints, no trailing fields: never longer than what was decoded.
            assert!(again.len() <= data.len(), "{again:?} from {data:?}");
            // The same descriptor; one of a newer minor version comes back as 1.0 sees it.
            let back = decode_compact(again).expect("a re-encoded descriptor decodes");
            roundtrip::assert_same(&back, &d);
            roundtrip::check_valid(&d);
        }
        Err(e) => roundtrip::check_error(&e),
    }
});
