//! The Rust validator against the naive model (SPEC.md §1, R18 to R22): descriptors are
//! written in both wire forms by `spec` (from SPEC.md alone), then decoded; the fixed
//! record, the compact form and `Layout::new` must all agree with the model on valid or
//! invalid, on the rule and its values when invalid, and on the span, the fields and every
//! element's offset when valid.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stridemap_core::{
    DecodeError, Layout, MAX_BYTES, MAX_NDIM, MAX_VOID_ITEMSIZE, decode, decode_compact,
};
use stridemap_fuzz::model::{self, Geometry};
use stridemap_fuzz::spec::{self, Fields};
use stridemap_fuzz::{roundtrip, rules};

/// Element types to pick from (any valid `|V` itemsize is possible too).
const TYPESTRS: &[&str] = &[
    "|b1", "|i1", "|u1", "<i2", ">i2", "<u2", "<i4", ">i4", "<u4", "<i8", ">u8", "<f2", ">f4",
    "<f8", ">f8", "<f16", "<c8", ">c16", "<c32", "|V3", "|V12",
];

#[derive(Arbitrary, Debug)]
struct Input {
    dtype: DtypeChoice,
    axes: Vec<(Len, Stride)>,
    offset: Place,
    buffer_len: Place,
    buffer_offset: Num,
    file_len: FileLen,
    fortran: bool,
    mode: u8,
    fd: bool,
}

#[derive(Arbitrary, Debug)]
enum DtypeChoice {
    Listed(u8),
    Void(u32),
}

/// An axis length: mostly small, so the model can enumerate the elements.
#[derive(Arbitrary, Debug)]
enum Len {
    Small(u8),
    Pow2(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Stride {
    Small(i8),
    Scaled(i8, u8),
    Any(i64),
}

#[derive(Arbitrary, Debug)]
enum Num {
    Small(u16),
    BelowMax(u16),
    Any(u64),
}

/// An offset or buffer length: just what makes the array fit (plus slack), or any number.
#[derive(Arbitrary, Debug)]
enum Place {
    Fit(u8),
    Num(Num),
}

#[derive(Arbitrary, Debug)]
enum FileLen {
    Exact,
    Slack(u16),
    Num(Num),
}

impl Num {
    fn get(&self) -> u64 {
        match *self {
            Num::Small(v) => u64::from(v),
            Num::BelowMax(v) => MAX_BYTES - u64::from(v),
            Num::Any(v) => v,
        }
    }
}

/// Clamps an exact value into u64.
fn clamp(v: i128) -> u64 {
    v.clamp(0, i128::from(u64::MAX)) as u64
}

fn fields(input: &Input) -> Fields {
    let typestr = match input.dtype {
        DtypeChoice::Listed(i) => TYPESTRS[usize::from(i) % TYPESTRS.len()].to_string(),
        DtypeChoice::Void(n) => format!("|V{}", 1 + n % MAX_VOID_ITEMSIZE),
    };
    let itemsize: u64 = typestr[2..].parse().expect("digits");
    let (shape, strides): (Vec<u64>, Vec<i64>) = input
        .axes
        .iter()
        .take(MAX_NDIM)
        .map(|(d, s)| {
            let d = match *d {
                Len::Small(v) => u64::from(v % 6),
                Len::Pow2(v) => 1 << (v % 64),
                Len::Any(v) => v,
            };
            let s = match *s {
                Stride::Small(v) => i64::from(v),
                Stride::Scaled(v, shift) => i64::from(v) << (shift % 56),
                Stride::Any(v) => v,
            };
            (d, s)
        })
        .unzip();
    let extent = |pick: fn(i128) -> bool| -> i128 {
        shape
            .iter()
            .zip(&strides)
            .map(|(&d, &s)| i128::from(d.saturating_sub(1)) * i128::from(s))
            .filter(|&e| pick(e))
            .fold(0, i128::saturating_add)
            // Far past u64 either way; small enough that the sums below cannot overflow.
            .clamp(-1 << 100, 1 << 100)
    };
    let offset = match &input.offset {
        Place::Fit(slack) => clamp(-extent(|e| e < 0) + i128::from(*slack)),
        Place::Num(n) => n.get(),
    };
    let max_stride = strides.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    let buffer_len = match &input.buffer_len {
        Place::Fit(slack) => clamp(
            i128::from(offset) + extent(|e| e > 0) + i128::from(itemsize) + i128::from(*slack),
        )
        .max(max_stride),
        Place::Num(n) => n.get(),
    };
    let buffer_offset = input.buffer_offset.get();
    let file_len = match &input.file_len {
        FileLen::Exact => buffer_offset.saturating_add(buffer_len),
        FileLen::Slack(s) => buffer_offset
            .saturating_add(buffer_len)
            .saturating_add(u64::from(*s)),
        FileLen::Num(n) => n.get(),
    };
    Fields {
        version: (1, 0),
        typestr,
        fortran: input.fortran,
        mode: input.mode % 3,
        fd: input.fd,
        path: if input.fd {
            String::new()
        } else {
            "/dev/shm/stridemap-fuzz/a".to_string()
        },
        shape,
        strides,
        offset,
        buffer_offset,
        buffer_len,
        file_len,
        device: 7,
        inode: 11,
        generation: 0,
        segment_id: [0; 16],
    }
}

fn geometry(f: &Fields, itemsize: u32) -> Geometry {
    Geometry {
        itemsize,
        shape: f.shape.clone(),
        strides: f.strides.iter().map(|&s| i128::from(s)).collect(),
        offset: i128::from(f.offset),
        buffer_len: f.buffer_len,
    }
}

/// The memory the smaller layouts are checked against.
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

fuzz_target!(|input: Input| {
    let f = fields(&input);
    let itemsize: u32 = f.typestr[2..].parse().expect("digits");
    let g = geometry(&f, itemsize);
    // Every other field is valid by construction.
    let want = rules::placement(&g, f.buffer_offset, f.file_len);

    let fixed = decode(&spec::fixed(&f));
    assert_eq!(
        fixed.as_ref().map(|d| d.span()).map_err(|e| *e),
        want,
        "fixed record"
    );
    assert_eq!(decode_compact(&spec::compact(&f)), fixed, "compact form");

    let layout = Layout::new(itemsize, &f.shape, &f.strides, f.offset, f.buffer_len);
    let want_layout = if f.buffer_len > MAX_BYTES {
        Err(DecodeError::BufferOverflow {
            buffer_offset: 0,
            buffer_len: f.buffer_len,
        })
    } else {
        g.verdict()
    };
    match (layout.map(|l| l.span()), want_layout) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "Layout::new"),
        (Err(l), Err(d)) => assert!(
            model::same_check(&l, &d),
            "Layout::new: {l:?}, model: {d:?}"
        ),
        (got, want) => panic!("Layout::new: {got:?}, model: {want:?}"),
    }

    let Ok(d) = fixed else { return };
    assert_eq!(d.dtype().typestr().as_str(), f.typestr);
    assert_eq!((d.shape(), d.strides()), (&f.shape[..], &f.strides[..]));
    assert_eq!(
        (d.offset(), d.buffer_offset(), d.buffer_len(), d.file_len()),
        (f.offset, f.buffer_offset, f.buffer_len, f.file_len)
    );
    assert_eq!(d.mode().code(), u32::from(f.mode));
    assert_eq!(d.path(), (!f.fd).then_some(f.path.as_str()));
    if model::enumerable(&f.shape) {
        match ZEROS.get(..f.buffer_len as usize) {
            Some(buffer) => model::check_layout(&d.layout(), buffer),
            None => {
                let got: Vec<i128> = d.layout().offsets().map(i128::from).collect();
                assert_eq!(got, g.offsets());
            }
        }
    }
    roundtrip::check_valid(&d);
});
