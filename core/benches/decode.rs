//! Decode + validate of a 4-axis descriptor: the fixed record and the compact form.
//!
//! `cargo bench -p stridemap-core --all-features --bench decode`
//! (the `std` feature enables the hardware CRC-32C).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use stridemap_core::{Builder, COMPACT_MAX_LEN, DType, decode, decode_compact};

fn descriptor() -> stridemap_core::ValidDescriptor {
    Builder::new(DType::parse("<f8").unwrap(), &[16, 128, 64, 32])
        .strides(&[-2_097_152, 8, 1024, 65536])
        .offset(31_457_280)
        .buffer(4096, 33_554_432)
        .file_len(33_558_528)
        .identity(0x2b, 0x1234_5678)
        .segment_id(*b"0123456789abcdef")
        .generation(3)
        .path("/dev/shm/stridemap-123-456-0a1b2c3d/seg-000042")
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let d = descriptor();
    let fixed = d.to_bytes();
    let mut buf = [0u8; COMPACT_MAX_LEN];
    let compact = d.encode_compact(&mut buf).unwrap().to_vec();
    assert_eq!(decode_compact(&compact).unwrap(), d);

    let mut g = c.benchmark_group("decode_validate_4d");
    g.bench_function("fixed", |b| {
        b.iter(|| decode(black_box(&fixed[..])).unwrap())
    });
    g.bench_function("compact", |b| {
        b.iter(|| decode_compact(black_box(&compact[..])).unwrap())
    });
    g.bench_function("build_fixed", |b| {
        b.iter(|| black_box(&d).to_builder().build().unwrap().to_bytes())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches, parts_group);

fn parts(c: &mut Criterion) {
    use zerocopy::FromBytes;
    let d = descriptor();
    let fixed = d.to_bytes();
    let r = stridemap_core::Record::ref_from_bytes(&fixed[..]).unwrap();
    c.bench_function("crc_only", |b| b.iter(|| black_box(r).compute_crc()));
    c.bench_function("layout_only", |b| {
        b.iter(|| {
            stridemap_core::Layout::new(
                8,
                black_box(d.shape()),
                black_box(d.strides()),
                black_box(d.offset()),
                black_box(d.buffer_len()),
            )
            .unwrap()
        })
    });
}
criterion_group!(parts_group, parts);
