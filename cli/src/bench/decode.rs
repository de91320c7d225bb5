//! Decode + validate of a 4-axis descriptor: fixed record and compact form.

use std::hint::black_box;

use stridemap_core::{Builder, COMPACT_MAX_LEN, DType, decode, decode_compact};

use super::{Budget, Row, fmt_secs, per_call};

pub(crate) fn rows(budget: Budget) -> Result<Vec<Row>, String> {
    let f8 = DType::parse("<f8").map_err(|e| e.to_string())?;
    let d = Builder::new(f8, &[16, 128, 64, 32])
        .strides(&[-2_097_152, 8, 1024, 65536])
        .offset(31_457_280)
        .buffer(4096, 33_554_432)
        .file_len(33_558_528)
        .identity(0x2b, 0x1234_5678)
        .generation(3)
        .path("/dev/shm/stridemap-123-456-0a1b2c3d/seg-000042")
        .build()
        .map_err(|e| e.to_string())?;
    let fixed = d.to_bytes();
    let mut buf = [0u8; COMPACT_MAX_LEN];
    let compact = d
        .encode_compact(&mut buf)
        .map_err(|e| e.to_string())?
        .to_vec();
    let tf = per_call(
        || drop(black_box(decode(black_box(&fixed[..])))),
        budget.rounds,
        budget.batch,
    );
    let tc = per_call(
        || drop(black_box(decode_compact(black_box(&compact[..])))),
        budget.rounds,
        budget.batch,
    );
    Ok(vec![
        Row {
            group: "decode",
            name: "fixed record (1024 B), 4-d".into(),
            ours: fmt_secs(tf),
            reference: "-".into(),
            ratio: None,
            target: "< 100 ns".into(),
            met: Some(tf < 100e-9),
        },
        Row {
            group: "decode",
            name: format!("compact form ({} B), 4-d", compact.len()),
            ours: fmt_secs(tc),
            reference: "-".into(),
            ratio: None,
            target: "< 300 ns".into(),
            met: Some(tc < 300e-9),
        },
    ])
}
