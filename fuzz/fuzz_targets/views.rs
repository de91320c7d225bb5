//! The `stridemap` crate's views over an in-memory buffer of arbitrary length: an arbitrary
//! descriptor (any dtype, strides, offset, buffer), validated, then every element read through
//! the byte view and, where the layout allows one, the typed view — and again after every
//! sub-view the input asks for (slice with any step, index, transpose, permute). Each read is
//! compared with the bytes at the naive model's offset, taken from the buffer directly; the
//! view code must never touch a byte outside the buffer (AddressSanitizer watches).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stridemap::{ByteView, View};
use stridemap_core::{Builder, DType, Layout, Slice};
use stridemap_fuzz::model::{Geometry, enumerable, for_each_index};

#[derive(Arbitrary, Debug)]
struct Input {
    dtype: u8,
    axes: Vec<(u8, i16)>,
    offset: u16,
    buffer_len: u16,
    fill: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Slice {
        axis: u8,
        start: Option<i8>,
        stop: Option<i8>,
        step: i8,
    },
    Index {
        axis: u8,
        index: u8,
    },
    Transpose,
    Permute(u8),
}

const DTYPES: [&str; 5] = ["<f8", "|u1", ">i4", "|V3", "<c16"];

/// Every element of `v` read through the view equals the bytes at the model's offset.
fn check(v: &ByteView<'_>, buffer: &[u8]) {
    let l = *v.layout();
    if !enumerable(l.shape()) {
        return;
    }
    let g = Geometry::of(&l);
    let n = l.itemsize() as usize;
    let mut expect = Vec::new();
    for_each_index(l.shape(), |ix| {
        let off = usize::try_from(g.element(ix)).expect("in bounds");
        let want = &buffer[off..off + n];
        let ix: Vec<usize> = ix
            .iter()
            .map(|&i| usize::try_from(i).expect("64-bit"))
            .collect();
        assert_eq!(v.element(&ix).expect("index in range"), want);
        expect.extend_from_slice(want);
    });
    assert_eq!(v.to_contiguous(), expect);
    assert_eq!(v.elements().count() as u64, l.len());
    // The typed view, when the dtype is f64 and the layout aligned, reads the same values.
    if v.dtype() == DType::parse("<f8").unwrap() && cfg!(target_endian = "little") {
        if let Ok(t) = v.typed::<f64>() {
            let got: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(got, expect);
            let folded = t.iter().fold(0usize, |c, _| c + 1);
            assert_eq!(folded as u64, l.len());
        }
    }
}

fuzz_target!(|input: Input| {
    let dtype = DType::parse(DTYPES[input.dtype as usize % DTYPES.len()]).unwrap();
    let axes: Vec<_> = input.axes.iter().take(4).collect();
    let shape: Vec<u64> = axes.iter().map(|(d, _)| u64::from(d % 6)).collect();
    let strides: Vec<i64> = axes.iter().map(|(_, s)| i64::from(*s)).collect();
    let Ok(desc) = Builder::new(dtype, &shape)
        .strides(&strides)
        .offset(u64::from(input.offset))
        .buffer(0, u64::from(input.buffer_len))
        .path("/fuzz")
        .build()
    else {
        return;
    };
    // The buffer in 8-byte words, so that typed views can be aligned.
    let words = vec![
        u64::from_ne_bytes([input.fill; 8]) ^ 0x0102_0304_0506_0708;
        usize::from(input.buffer_len).div_ceil(8)
    ];
    let all: &[u8] = bytemuck::cast_slice(&words);
    let buffer = &all[..usize::from(input.buffer_len)];
    let layout: Layout = desc.layout();
    let mut view = ByteView::new(buffer, layout, dtype).expect("a valid descriptor's view");
    check(&view, buffer);
    for op in input.ops.iter().take(8) {
        let n = view.ndim();
        let next = match *op {
            Op::Slice {
                axis,
                start,
                stop,
                step,
            } if n > 0 => view.slice_axis(
                usize::from(axis) % n,
                Slice::new(start.map(i64::from), stop.map(i64::from), i64::from(step)),
            ),
            Op::Index { axis, index } if n > 0 => {
                view.index_axis(usize::from(axis) % n, usize::from(index))
            }
            Op::Transpose => Ok(view.t()),
            Op::Permute(seed) => {
                let mut axes: Vec<usize> = (0..n).collect();
                if n > 1 {
                    axes.swap(0, usize::from(seed) % n);
                }
                view.permute(&axes)
            }
            _ => continue,
        };
        match next {
            Ok(v) => {
                check(&v, buffer);
                // A sub-view is a descriptor of the same buffer again (a heap view has no
                // source to describe itself from; the descriptor's builder does the same).
                assert!(v.describe().is_err());
                let d = desc
                    .to_builder()
                    .layout(v.layout())
                    .build()
                    .expect("a valid sub-view");
                assert_eq!(d.layout(), *v.layout());
                view = v;
            }
            Err(_) => {}
        }
    }
    // A typed view over the whole buffer never reads outside it either.
    if let Ok(t) = View::<f64>::new(buffer, layout) {
        let _ = t.iter().count();
    }
});
