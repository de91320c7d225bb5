//! The conformance vectors of `tests/vectors/`: how each is made, and the JSON every reader
//! (Rust, Python, C) must reproduce from its bytes.
//!
//! Each vector is a `NAME.bin` (a fixed record, or a compact form) and a `NAME.json`:
//! `{"name", "description", "form": "fixed"|"compact", "valid": true, "fields": {...},
//! "derived": {...}}` or `{..., "valid": false, "rule": "R22"}`.

use std::path::PathBuf;

use serde_json::{Value, json};
use stridemap_core::{
    Builder, CompactDescriptor, CompactSource, DType, DecodeError, Mode, Order, RECORD_LEN, Record,
    Source, ValidDescriptor, decode, decode_compact,
};
use zerocopy::{FromBytes, IntoBytes};

/// The folder holding the vectors.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// Which encoding a vector's bytes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// The 1024-byte record.
    Fixed,
    /// The postcard-encoded compact form.
    Compact,
}

/// One vector: its bytes and the rule it must break, if any.
#[derive(Debug)]
pub struct Vector {
    /// File stem.
    pub name: &'static str,
    /// What it exercises.
    pub description: &'static str,
    /// Encoding.
    pub form: Form,
    /// The bytes of `NAME.bin`.
    pub bytes: Vec<u8>,
    /// `None` if valid, else the rule id it breaks.
    pub rule: Option<&'static str>,
}

/// Decodes bytes in the vector's form.
pub fn decode_as(form: Form, bytes: &[u8]) -> Result<ValidDescriptor, DecodeError> {
    match form {
        Form::Fixed => decode(bytes),
        Form::Compact => decode_compact(bytes),
    }
}

/// The JSON a reader must produce for these bytes.
pub fn expected_json(v: &Vector) -> Value {
    let form = match v.form {
        Form::Fixed => "fixed",
        Form::Compact => "compact",
    };
    let mut out = json!({ "name": v.name, "description": v.description, "form": form });
    match decode_as(v.form, &v.bytes) {
        Ok(d) => {
            out["valid"] = json!(true);
            out["fields"] = fields_json(&d);
            out["derived"] = derived_json(&d);
        }
        Err(e) => {
            out["valid"] = json!(false);
            out["rule"] = json!(e.rule());
            out["message"] = json!(e.to_string());
        }
    }
    out
}

/// Every field of a valid descriptor, as SPEC.md names them.
pub fn fields_json(d: &ValidDescriptor) -> Value {
    let (major, minor) = d.version();
    let r = d.to_record();
    json!({
        "version": [major, minor],
        "dtype": d.dtype().typestr().as_str(),
        "order": d.order().as_str(),
        "mode": d.mode().as_str(),
        "source": match d.source() { Source::Path => "path", Source::Fd => "fd" },
        "path": d.path().unwrap_or(""),
        "ndim": d.ndim(),
        "shape": d.shape(),
        "strides": d.strides(),
        "offset": d.offset(),
        "buffer_offset": d.buffer_offset(),
        "buffer_len": d.buffer_len(),
        "file_len": d.file_len(),
        "device": r.device.get(),
        "inode": r.inode.get(),
        "generation": d.generation(),
        "segment_id": hex(&r.segment_id),
    })
}

/// The facts validation derives.
pub fn derived_json(d: &ValidDescriptor) -> Value {
    json!({
        "itemsize": d.itemsize(),
        "len": d.len(),
        "nbytes": d.nbytes(),
        "span": [d.span().start, d.span().end],
        "c_contiguous": d.is_c_contiguous(),
        "f_contiguous": d.is_f_contiguous(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const P: &str = "/dev/shm/stridemap-vectors/array.bin";

fn f8() -> DType {
    DType::parse("<f8").expect("valid typestr")
}

fn fixed(b: Builder<'_>) -> Vec<u8> {
    b.build()
        .expect("vector builder must be valid")
        .to_bytes()
        .to_vec()
}

/// A valid record with `edit` applied, and the checksum recomputed unless `keep_crc`.
fn edited(b: Builder<'_>, keep_crc: bool, edit: impl FnOnce(&mut Record)) -> Vec<u8> {
    let bytes = fixed(b);
    let mut r = Record::read_from_bytes(&bytes).expect("1024 bytes");
    edit(&mut r);
    if !keep_crc {
        let crc = r.compute_crc();
        r.crc32c.set(crc);
    }
    r.as_bytes().to_vec()
}

fn compact(c: &CompactDescriptor) -> Vec<u8> {
    postcard::to_allocvec(c).expect("encodable")
}

fn base_compact() -> CompactDescriptor {
    Builder::new(f8(), &[3, 4])
        .path(P)
        .build()
        .expect("valid")
        .to_compact()
}

/// Every vector, in a stable order.
pub fn all() -> Vec<Vector> {
    let mut v = Vec::new();
    let mut add = |name, description, form, bytes, rule| {
        v.push(Vector {
            name,
            description,
            form,
            bytes,
            rule,
        })
    };
    use Form::{Compact, Fixed};

    // ---- valid fixed records ------------------------------------------------------------
    add(
        "valid_c_order",
        "3x4 <f8, C order, whole file",
        Fixed,
        fixed(Builder::new(f8(), &[3, 4]).path(P)),
        None,
    );
    add(
        "valid_f_order",
        "3x4 <f4, Fortran order",
        Fixed,
        fixed(
            Builder::new(DType::parse("<f4").unwrap(), &[3, 4])
                .order(Order::F)
                .path(P),
        ),
        None,
    );
    add(
        "valid_reversed",
        "m[::-1] of 1000 <f8: element 0 is the last double (offset 7992, stride -8)",
        Fixed,
        fixed(
            Builder::new(f8(), &[1000])
                .strides(&[-8])
                .offset(7992)
                .buffer(0, 8000)
                .path(P),
        ),
        None,
    );
    add(
        "valid_reversed_window",
        "m[500:490:-1] of 1000 <f8",
        Fixed,
        fixed(
            Builder::new(f8(), &[10])
                .strides(&[-8])
                .offset(4000)
                .buffer(0, 8000)
                .path(P),
        ),
        None,
    );
    add(
        "valid_reversed_step",
        "m[::-3] of 1000 <f8",
        Fixed,
        fixed(
            Builder::new(f8(), &[334])
                .strides(&[-24])
                .offset(7992)
                .buffer(0, 8000)
                .path(P),
        ),
        None,
    );
    add(
        "valid_transpose",
        "transpose of a C-ordered 10x20 <f8: shape (20, 10), strides (8, 160)",
        Fixed,
        fixed(
            Builder::new(f8(), &[20, 10])
                .strides(&[8, 160])
                .order(Order::F)
                .path(P),
        ),
        None,
    );
    add(
        "valid_broadcast",
        "5x3 <i4 with a zero stride (one row repeated)",
        Fixed,
        fixed(
            Builder::new(DType::parse("<i4").unwrap(), &[5, 3])
                .strides(&[0, 4])
                .path(P),
        ),
        None,
    );
    add(
        "valid_0d",
        "a 0-d <u2 at offset 6 of an 8-byte buffer",
        Fixed,
        fixed(
            Builder::new(DType::parse("<u2").unwrap(), &[])
                .offset(6)
                .buffer(0, 8)
                .path(P),
        ),
        None,
    );
    add(
        "valid_zero_length",
        "0x5 <f8 at the very end of a 64-byte buffer: touches nothing",
        Fixed,
        fixed(
            Builder::new(f8(), &[0, 5])
                .strides(&[40, 8])
                .offset(64)
                .buffer(0, 64)
                .path(P),
        ),
        None,
    );
    add(
        "valid_big_endian",
        "4 >i8",
        Fixed,
        fixed(Builder::new(DType::parse(">i8").unwrap(), &[4]).path(P)),
        None,
    );
    add(
        "valid_complex",
        "2x2 <c16",
        Fixed,
        fixed(Builder::new(DType::parse("<c16").unwrap(), &[2, 2]).path(P)),
        None,
    );
    add(
        "valid_unaligned_offset",
        "3 <f8 starting at byte 3 (not a multiple of the itemsize)",
        Fixed,
        fixed(Builder::new(f8(), &[3]).offset(3).buffer(0, 27).path(P)),
        None,
    );
    add(
        "valid_32_axes",
        "32 axes of length 2 of |u1 (2^32 bytes)",
        Fixed,
        fixed(Builder::new(DType::parse("|u1").unwrap(), &[2; 32]).path(P)),
        None,
    );
    add(
        "valid_void_record",
        "10 |V12 records",
        Fixed,
        fixed(Builder::new(DType::parse("|V12").unwrap(), &[10]).path(P)),
        None,
    );
    add(
        "valid_bool",
        "7 |b1",
        Fixed,
        fixed(Builder::new(DType::parse("|b1").unwrap(), &[7]).path(P)),
        None,
    );
    add(
        "valid_float128",
        "3 <f16",
        Fixed,
        fixed(Builder::new(DType::parse("<f16").unwrap(), &[3]).path(P)),
        None,
    );
    add(
        "valid_fd_source",
        "an fd-passed memfd: r+, identity, segment id and generation",
        Fixed,
        fixed(
            Builder::new(f8(), &[128, 2])
                .mode(Mode::ReadWrite)
                .fd()
                .buffer(64, 2048)
                .file_len(4096)
                .identity(0x1b, 0x4242)
                .segment_id(*b"0123456789abcdef")
                .generation(7),
        ),
        None,
    );
    add(
        "valid_buffer_inside_file",
        "mode c, a buffer at byte 4096 of a 1 MiB file",
        Fixed,
        fixed(
            Builder::new(DType::parse(">f4").unwrap(), &[16, 16])
                .mode(Mode::CopyOnWrite)
                .buffer(4096, 1024)
                .file_len(1 << 20)
                .path(P),
        ),
        None,
    );
    add(
        "valid_limits",
        "a stride of 2^62 and a buffer ending exactly at 2^63-1",
        Fixed,
        fixed(
            Builder::new(DType::parse("|u1").unwrap(), &[2])
                .strides(&[1 << 62])
                .buffer((1 << 62) - 2, (1 << 62) + 1)
                .file_len(i64::MAX as u64)
                .path(P),
        ),
        None,
    );
    add(
        "valid_newer_minor",
        "minor version 7 with a reserved byte and flag bit 9 set: a 1.0 reader accepts it",
        Fixed,
        edited(Builder::new(f8(), &[3, 4]).path(P), false, |r| {
            r.version_minor.set(7);
            r.reserved3[0] = 0x55;
            r.flags.set(r.flags.get() | 1 << 9);
        }),
        None,
    );
    add(
        "valid_long_path",
        "a path of exactly 256 bytes",
        Fixed,
        fixed(Builder::new(f8(), &[1]).path(LONG_PATH)),
        None,
    );

    // ---- invalid fixed records: one per rule -------------------------------------------
    let base = || Builder::new(f8(), &[3, 4]).path(P);
    add(
        "invalid_r1_truncated",
        "1023 bytes",
        Fixed,
        fixed(base())[..RECORD_LEN - 1].to_vec(),
        Some("R1"),
    );
    add(
        "invalid_r2_bad_magic",
        "first byte 0x88",
        Fixed,
        edited(base(), false, |r| r.magic[0] = 0x88),
        Some("R2"),
    );
    add(
        "invalid_r3_major_2",
        "major version 2",
        Fixed,
        edited(base(), false, |r| r.version_major.set(2)),
        Some("R3"),
    );
    add(
        "invalid_r4_bad_crc",
        "shape[0] changed after the CRC was computed",
        Fixed,
        edited(base(), true, |r| r.shape[0].set(4)),
        Some("R4"),
    );
    add(
        "invalid_r5_unknown_flag",
        "flag bit 4 set in a 1.0 record",
        Fixed,
        edited(base(), false, |r| r.flags.set(r.flags.get() | 1 << 4)),
        Some("R5"),
    );
    add(
        "invalid_r6_mode_3",
        "mode bits = 3",
        Fixed,
        edited(base(), false, |r| r.flags.set(r.flags.get() | 0b110)),
        Some("R6"),
    );
    add(
        "invalid_r7_reserved",
        "the last reserved byte (1019) is 1",
        Fixed,
        edited(base(), false, |r| r.reserved3[123] = 1),
        Some("R7"),
    );
    add(
        "invalid_r8_unknown_kind",
        "kind 'x'",
        Fixed,
        edited(base(), false, |r| r.dtype_kind = b'x'),
        Some("R8"),
    );
    add(
        "invalid_r9_itemsize_0",
        "itemsize 0",
        Fixed,
        edited(base(), false, |r| r.itemsize.set(0)),
        Some("R9"),
    );
    add(
        "invalid_r9_float_3",
        "a 3-byte float",
        Fixed,
        edited(base(), false, |r| r.itemsize.set(3)),
        Some("R9"),
    );
    add(
        "invalid_r10_byteorder",
        "|f8: a multi-byte float needs < or >",
        Fixed,
        edited(base(), false, |r| r.dtype_byteorder = b'|'),
        Some("R10"),
    );
    add(
        "invalid_r11_ndim_33",
        "ndim 33",
        Fixed,
        edited(base(), false, |r| r.ndim = 33),
        Some("R11"),
    );
    add(
        "invalid_r12_unused_axis",
        "shape[5] = 1 with ndim 2",
        Fixed,
        edited(base(), false, |r| r.shape[5].set(1)),
        Some("R12"),
    );
    add(
        "invalid_r13_path_too_long",
        "path_len 257",
        Fixed,
        edited(base(), false, |r| r.path_len.set(257)),
        Some("R13"),
    );
    add(
        "invalid_r14_path_padding",
        "a byte after the path is not zero",
        Fixed,
        edited(base(), false, |r| r.path[200] = b'x'),
        Some("R14"),
    );
    add(
        "invalid_r15_path_not_utf8",
        "path byte 0xff",
        Fixed,
        edited(base(), false, |r| r.path[3] = 0xff),
        Some("R15"),
    );
    add(
        "invalid_r16_path_nul",
        "a NUL inside the path",
        Fixed,
        edited(base(), false, |r| r.path[5] = 0),
        Some("R16"),
    );
    add(
        "invalid_r17_fd_with_path",
        "source fd but a path is present",
        Fixed,
        edited(base(), false, |r| r.flags.set(r.flags.get() | 1 << 3)),
        Some("R17"),
    );
    add(
        "invalid_r17_path_empty",
        "source path but path_len 0",
        Fixed,
        edited(base(), false, |r| {
            r.path_len.set(0);
            r.path = [0; 256];
        }),
        Some("R17"),
    );
    add(
        "invalid_r18_buffer_overflow",
        "buffer_offset 2^63-1 with a 96-byte buffer",
        Fixed,
        edited(base(), false, |r| {
            r.buffer_offset.set(i64::MAX as u64);
            r.file_len.set(u64::MAX);
        }),
        Some("R18"),
    );
    add(
        "invalid_r19_file_too_short",
        "file_len one byte short of the buffer's end",
        Fixed,
        edited(base(), false, |r| r.file_len.set(95)),
        Some("R19"),
    );
    add(
        "invalid_r20_size_overflow",
        "shape (2^31, 2^31, 2^2) of 8-byte items: 2^67 bytes",
        Fixed,
        edited(base(), false, |r| {
            r.ndim = 3;
            r.shape[0].set(1 << 31);
            r.shape[1].set(1 << 31);
            r.shape[2].set(4);
            r.strides[2].set(8);
        }),
        Some("R20"),
    );
    add(
        "invalid_r20_zero_axis_overflow",
        "shape (0, 2^62) of 8-byte items: zero axes count as 1",
        Fixed,
        edited(base(), false, |r| {
            r.shape[0].set(0);
            r.shape[1].set(1 << 62);
        }),
        Some("R20"),
    );
    add(
        "invalid_r21_stride_too_large",
        "stride 97 in a 96-byte buffer",
        Fixed,
        edited(base(), false, |r| r.strides[0].set(97)),
        Some("R21"),
    );
    add(
        "invalid_r21_stride_overflow",
        "stride -2^63 (its magnitude does not fit in i64)",
        Fixed,
        edited(base(), false, |r| r.strides[0].set(i64::MIN)),
        Some("R21"),
    );
    add(
        "invalid_r22_one_byte_high",
        "offset 1: the last element's last byte is at 96",
        Fixed,
        edited(base(), false, |r| r.offset.set(1)),
        Some("R22"),
    );
    add(
        "invalid_r22_one_byte_low",
        "reversed rows with offset 63: the lowest byte would be -1",
        Fixed,
        edited(base(), false, |r| {
            r.strides[0].set(-32);
            r.offset.set(63);
        }),
        Some("R22"),
    );
    add(
        "invalid_r22_empty_offset",
        "an empty array whose offset is past the buffer",
        Fixed,
        edited(base(), false, |r| {
            r.shape[0].set(0);
            r.offset.set(97);
        }),
        Some("R22"),
    );

    // ---- compact forms -------------------------------------------------------------------
    add(
        "compact_valid",
        "the compact form of valid_c_order",
        Compact,
        compact(&base_compact()),
        None,
    );
    add(
        "compact_valid_fd_reversed",
        "compact: fd source, reversed rows, r+",
        Compact,
        compact(
            &Builder::new(f8(), &[3, 4])
                .strides(&[-32, 8])
                .offset(64)
                .buffer(0, 96)
                .mode(Mode::ReadWrite)
                .fd()
                .build()
                .unwrap()
                .to_compact(),
        ),
        None,
    );
    add(
        "compact_valid_newer_minor",
        "compact minor 3 with two trailing bytes: ignored",
        Compact,
        {
            let mut c = base_compact();
            c.minor = 3;
            let mut b = compact(&c);
            b.extend([0x01, 0x02]);
            b
        },
        None,
    );
    add(
        "compact_invalid_c1_truncated",
        "compact form cut in the middle",
        Compact,
        compact(&base_compact())[..20].to_vec(),
        Some("C1"),
    );
    add(
        "compact_invalid_c1_trailing",
        "a 1.0 compact form with a trailing byte",
        Compact,
        {
            let mut b = compact(&base_compact());
            b.push(0);
            b
        },
        Some("C1"),
    );
    add(
        "compact_invalid_c2_magic",
        "compact magic \\x89SMX",
        Compact,
        {
            let mut b = compact(&base_compact());
            b[3] = b'X';
            b
        },
        Some("C2"),
    );
    add(
        "compact_invalid_r3_major",
        "compact major version 9",
        Compact,
        {
            let mut c = base_compact();
            c.major = 9;
            compact(&c)
        },
        Some("R3"),
    );
    add(
        "compact_invalid_c3_axis_mismatch",
        "two shape entries, one stride",
        Compact,
        {
            let mut c = base_compact();
            c.strides.pop();
            compact(&c)
        },
        Some("C3"),
    );
    add(
        "compact_invalid_c4_typestr",
        "typestr 'f8'",
        Compact,
        {
            let mut c = base_compact();
            c.dtype = heapless_str("f8");
            compact(&c)
        },
        Some("C4"),
    );
    add(
        "compact_invalid_r22",
        "compact: offset 1 puts the last byte out",
        Compact,
        {
            let mut c = base_compact();
            c.offset = 1;
            compact(&c)
        },
        Some("R22"),
    );
    add(
        "compact_invalid_r17",
        "compact: an empty path",
        Compact,
        {
            let mut c = base_compact();
            c.source = CompactSource::Path(heapless_str(""));
            compact(&c)
        },
        Some("R17"),
    );
    v
}

const LONG_PATH: &str = concat!(
    "/dev/shm/stridemap-vectors/",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
);

fn heapless_str<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    out.push_str(s).expect("fits");
    out
}
