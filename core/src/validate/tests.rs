//! One test per SPEC rule, each checking the values the error carries, and the rule order.

use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::{Builder, DType, Record, Source};

fn good() -> Record {
    let d = Builder::new(DType::parse("<f8").unwrap(), &[3, 4])
        .path("/dev/shm/x")
        .build()
        .unwrap();
    d.to_record()
}

/// Decodes `r` after fixing its checksum.
fn check(mut r: Record) -> Result<ValidDescriptor, DecodeError> {
    let crc = r.compute_crc();
    r.crc32c.set(crc);
    decode(r.as_bytes())
}

fn with(edit: impl FnOnce(&mut Record)) -> Result<ValidDescriptor, DecodeError> {
    let mut r = good();
    edit(&mut r);
    check(r)
}

#[test]
fn r1_truncated() {
    let b = good();
    assert_eq!(
        decode(&b.as_bytes()[..1023]),
        Err(DecodeError::Truncated {
            needed: 1024,
            got: 1023
        })
    );
    assert_eq!(
        decode(&[]),
        Err(DecodeError::Truncated {
            needed: 1024,
            got: 0
        })
    );
    // Longer inputs: the first 1024 bytes are the record, at any alignment.
    let mut long = [0u8; 2051];
    long[3..1027].copy_from_slice(b.as_bytes());
    assert!(decode(&long[3..]).is_ok());
}

#[test]
fn r2_to_r4_header() {
    let mut found = MAGIC;
    found[7] = b'?';
    assert_eq!(
        with(|r| r.magic[7] = b'?'),
        Err(DecodeError::BadMagic { found })
    );
    assert_eq!(
        with(|r| r.version_major.set(0)),
        Err(DecodeError::UnsupportedVersion { major: 0, minor: 0 })
    );
    let mut r = good();
    let stored = r.crc32c.get();
    r.ndim = 1;
    assert!(
        matches!(decode(r.as_bytes()), Err(DecodeError::BadChecksum { stored: s, .. }) if s == stored)
    );
}

#[test]
fn r5_to_r7_flags_and_reserved() {
    assert_eq!(
        with(|r| r.flags.set(1 << 31)),
        Err(DecodeError::UnknownFlags { flags: 1 << 31 })
    );
    assert_eq!(
        with(|r| r.flags.set(0b110)),
        Err(DecodeError::BadMode { code: 3 })
    );
    for offset in [19, 26, 31, 104, 127, 896, 1019] {
        let mut r = good();
        let mut bytes = [0u8; RECORD_LEN];
        bytes.copy_from_slice(r.as_bytes());
        bytes[offset] = 1;
        r = Record::read_from_bytes(&bytes).unwrap();
        assert_eq!(
            check(r),
            Err(DecodeError::ReservedNotZero { offset }),
            "{offset}"
        );
    }
    // A newer minor version may use them.
    assert!(
        with(|r| {
            r.version_minor.set(1);
            r.flags.set(r.flags.get() | 1 << 20);
            r.reserved2[0] = 9;
        })
        .is_ok()
    );
    // But not an invalid mode.
    assert_eq!(
        with(|r| {
            r.version_minor.set(1);
            r.flags.set(0b110);
        }),
        Err(DecodeError::BadMode { code: 3 })
    );
}

#[test]
fn r8_to_r10_dtype() {
    assert_eq!(
        with(|r| r.dtype_kind = b'S'),
        Err(DecodeError::UnknownKind { kind: b'S' })
    );
    assert_eq!(
        with(|r| r.itemsize.set(0)),
        Err(DecodeError::BadItemsize {
            kind: b'f',
            itemsize: 0
        })
    );
    assert_eq!(
        with(|r| r.dtype_byteorder = b'='),
        Err(DecodeError::BadByteOrder {
            byteorder: b'=',
            kind: b'f',
            itemsize: 8
        })
    );
}

#[test]
fn r11_r12_axes() {
    assert_eq!(
        with(|r| r.ndim = 33),
        Err(DecodeError::TooManyAxes { ndim: 33 })
    );
    assert_eq!(
        with(|r| r.ndim = 255),
        Err(DecodeError::TooManyAxes { ndim: 255 })
    );
    assert_eq!(
        with(|r| r.strides[31].set(-1)),
        Err(DecodeError::UnusedAxisNotZero { axis: 31 })
    );
    // Lowering ndim leaves a non-zero slot behind.
    assert_eq!(
        with(|r| r.ndim = 1),
        Err(DecodeError::UnusedAxisNotZero { axis: 1 })
    );
}

#[test]
fn r13_to_r17_path() {
    assert_eq!(
        with(|r| r.path_len.set(300)),
        Err(DecodeError::PathTooLong { len: 300 })
    );
    assert_eq!(
        with(|r| r.path[255] = 1),
        Err(DecodeError::PathPaddingNotZero { offset: 255 })
    );
    assert_eq!(
        with(|r| r.path[2] = 0xc3),
        Err(DecodeError::PathNotUtf8 { valid_up_to: 2 })
    );
    assert_eq!(
        with(|r| r.path[9] = 0),
        Err(DecodeError::PathContainsNul { index: 9 })
    );
    assert_eq!(
        with(|r| r.flags.set(r.flags.get() | 8)),
        Err(DecodeError::SourceMismatch {
            source: Source::Fd,
            path_len: 10
        })
    );
    assert_eq!(
        with(|r| {
            r.path_len.set(0);
            r.path = [0; 256];
        }),
        Err(DecodeError::SourceMismatch {
            source: Source::Path,
            path_len: 0
        })
    );
}

#[test]
fn r18_r19_buffer_and_file() {
    assert_eq!(
        with(|r| {
            r.buffer_offset.set(u64::MAX);
            r.file_len.set(u64::MAX);
        }),
        Err(DecodeError::BufferOverflow {
            buffer_offset: u64::MAX,
            buffer_len: 96
        })
    );
    assert_eq!(
        with(|r| r.buffer_offset.set(1)),
        Err(DecodeError::FileTooShort {
            buffer_end: 97,
            file_len: 96
        })
    );
}

#[test]
fn r20_to_r22_layout() {
    assert_eq!(
        with(|r| r.shape[1].set(u64::MAX)),
        Err(DecodeError::SizeOverflow { axis: 1 })
    );
    assert_eq!(
        with(|r| r.strides[1].set(-97)),
        Err(DecodeError::StrideTooLarge {
            axis: 1,
            stride: -97,
            buffer_len: 96
        })
    );
    assert_eq!(
        with(|r| r.offset.set(8)),
        Err(DecodeError::OutOfBounds {
            lo: 8,
            hi: 104,
            buffer_len: 96
        })
    );
}

#[test]
fn first_broken_rule_wins() {
    // Breaks R8, R11 and R22 at once: R8 is reported.
    assert!(matches!(
        with(|r| {
            r.dtype_kind = b'x';
            r.ndim = 40;
            r.offset.set(1000);
        }),
        Err(DecodeError::UnknownKind { .. })
    ));
    // Breaks R19 and R22: R19.
    assert!(matches!(
        with(|r| {
            r.file_len.set(1);
            r.offset.set(1000);
        }),
        Err(DecodeError::FileTooShort { .. })
    ));
}

#[test]
fn every_rule_names_itself_in_display() {
    let e = DecodeError::OutOfBounds {
        lo: -1,
        hi: 8,
        buffer_len: 8,
    };
    assert_eq!(e.rule(), "R22");
    let text = std::format!("{e}");
    assert!(text.starts_with("R22: "), "{text}");
    assert_eq!(crate::LayoutError::ZeroStep.rule(), None);
}

/// A layout check that a descriptor shares reports the same data on both sides, with the
/// rule of the descriptor's error.
#[test]
fn shared_checks_agree_between_layouts_and_descriptors() {
    use crate::{Layout, LayoutError};
    let cases: [(&[u64], &[i64], u64, u64); 3] = [
        (&[4], &[8], 8, 32),                  // R22
        (&[4], &[-64], 24, 32),               // R21
        (&[1 << 40, 1 << 40], &[0, 0], 0, 8), // R20
    ];
    for (shape, strides, offset, buffer_len) in cases {
        let l = Layout::new(8, shape, strides, offset, buffer_len).unwrap_err();
        let d = Builder::new(DType::parse("<f8").unwrap(), shape)
            .strides(strides)
            .offset(offset)
            .buffer(0, buffer_len)
            .path("/dev/shm/x")
            .build()
            .unwrap_err();
        assert_eq!(l.rule(), Some(d.rule()), "{l:?} {d:?}");
        let same = match (l, d) {
            (
                LayoutError::OutOfBounds { lo, hi, buffer_len },
                DecodeError::OutOfBounds {
                    lo: a,
                    hi: b,
                    buffer_len: c,
                },
            ) => (lo, hi, buffer_len) == (a, b, c),
            (
                LayoutError::StrideTooLarge {
                    axis,
                    stride,
                    buffer_len,
                },
                DecodeError::StrideTooLarge {
                    axis: a,
                    stride: b,
                    buffer_len: c,
                },
            ) => (axis, stride, buffer_len) == (a, b, c),
            (LayoutError::SizeOverflow { axis }, DecodeError::SizeOverflow { axis: a }) => {
                axis == a
            }
            _ => false,
        };
        assert!(same, "{l:?} {d:?}");
    }
}

#[test]
fn accessors() {
    let d = Builder::new(DType::parse(">i2").unwrap(), &[4, 5])
        .order(crate::Order::F)
        .mode(crate::Mode::CopyOnWrite)
        .buffer(4096, 40)
        .file_len(8192)
        .identity(7, 99)
        .segment_id([1; 16])
        .generation(3)
        .fd()
        .build()
        .unwrap();
    assert_eq!(d.path(), None);
    assert_eq!(d.source(), Source::Fd);
    assert_eq!(d.identity(), Some((7, 99)));
    assert_eq!(d.segment_id(), Some([1; 16]));
    assert_eq!(
        (d.generation(), d.file_offset(), d.version()),
        (3, 4096, (1, 0))
    );
    assert_eq!(decode(&d.to_bytes()), Ok(d.clone()));
    assert_eq!(d.to_builder().build(), Ok(d));
}
