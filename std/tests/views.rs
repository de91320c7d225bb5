//! Views over heap buffers against a naive model that reads every element's bytes itself:
//! random layouts with negative, zero and transposed strides, F order, 0-d, zero-length axes
//! and unaligned offsets, and random chains of sub-views. Runs under Miri too (few cases).

use proptest::prelude::*;
use stridemap::{ByteView, View, ViewMut, VolatileView, VolatileViewMut};
use stridemap_core::{DType, Layout, Order, Slice};

/// Element (multi-index) → byte offset, the long way.
fn model_offset(layout: &Layout, index: &[u64]) -> u64 {
    let off = index
        .iter()
        .zip(layout.strides())
        .fold(layout.offset() as i128, |a, (&i, &s)| {
            a + i as i128 * s as i128
        });
    off as u64
}

/// Every multi-index in C order.
fn indices(shape: &[u64]) -> Vec<Vec<u64>> {
    let mut out = vec![vec![]];
    for &d in shape {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..d).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    out
}

/// A heap buffer of f64 values whose bytes are all distinct-ish, with its layout.
#[derive(Debug, Clone)]
struct Case {
    words: Vec<u64>,
    layout: Layout,
}

impl Case {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }
}

prop_compose! {
    /// A valid layout of itemsize 8 over a buffer of `len` bytes; `aligned` keeps offsets and
    /// strides multiples of 8 so that typed views apply.
    fn case(aligned: bool)(ndim in 0usize..4)(
        shape in prop::collection::vec(0u64..5, ndim),
        steps in prop::collection::vec(-6i64..7, ndim),
        slack in 0u64..3,
        misalign in 0u64..8,
        fortran in any::<bool>(),
        seed in any::<u64>(),
    ) -> Case {
        // Strides: multiples of 8 (any sign, zero allowed), optionally in F order, optionally
        // nudged off the 8-byte grid.
        let unit = if aligned { 8 } else { 8 + (misalign as i64 % 3) };
        let mut strides: Vec<i64> = steps.iter().map(|&k| k * unit).collect();
        if fortran { strides.reverse(); }
        let ext = |pick: fn(i64) -> i64| -> i64 {
            shape.iter().zip(&strides).map(|(&d, &s)| if d > 0 { (d as i64 - 1) * pick(s) } else { 0 }).sum()
        };
        let (neg, pos) = (ext(|s| s.min(0)), ext(|s| s.max(0)));
        let offset = (-neg) as u64 + slack * 8 + if aligned { 0 } else { misalign };
        let max_stride = strides.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        let len = (offset + pos as u64 + 8 + slack * 8).max(max_stride).div_ceil(8) * 8;
        let words: Vec<u64> = (0..len / 8).map(|i| (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed).collect();
        let layout = Layout::new(8, &shape, &strides, offset, len).unwrap();
        Case { words, layout }
    }
}

/// A sub-view operation.
#[derive(Debug, Clone)]
enum Op {
    Slice(usize, Option<i64>, Option<i64>, i64),
    Index(usize, u64),
    Transpose,
    Permute(u64),
    Reshape(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0usize..4,
            prop::option::of(-6i64..6),
            prop::option::of(-6i64..6),
            prop_oneof![-3i64..0, 1i64..4]
        )
            .prop_map(|(a, b, c, d)| Op::Slice(a, b, c, d)),
        (0usize..4, 0u64..5).prop_map(|(a, i)| Op::Index(a, i)),
        Just(Op::Transpose),
        any::<u64>().prop_map(Op::Permute),
        any::<bool>().prop_map(Op::Reshape),
    ]
}

/// Applies `op` to a layout the same way the views do, so the model can follow.
fn apply(l: &Layout, op: &Op) -> Option<Layout> {
    let n = l.ndim();
    match *op {
        Op::Slice(a, start, stop, step) if n > 0 => {
            l.slice_axis(a % n, Slice::new(start, stop, step)).ok()
        }
        Op::Index(a, i) if n > 0 => l.index_axis(a % n, i % l.shape()[a % n].max(1)).ok(),
        Op::Transpose => Some(l.transpose()),
        Op::Permute(seed) => {
            let mut axes: Vec<usize> = (0..n).collect();
            let mut x = seed;
            for i in (1..n).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                axes.swap(i, (x >> 33) as usize % (i + 1));
            }
            l.permute(&axes).ok()
        }
        Op::Reshape(fortran) => l
            .reshape(&[l.len()], if fortran { Order::F } else { Order::C })
            .ok(),
        _ => None,
    }
}

/// A layout's `u64` size or index as the `usize` the views take (lossless on 64-bit Linux).
fn us(x: u64) -> usize {
    usize::try_from(x).unwrap()
}

/// A layout's `u64` index as the `usize` index the views take.
fn ix_us(ix: &[u64]) -> Vec<usize> {
    ix.iter().map(|&i| us(i)).collect()
}

fn read_f64(bytes: &[u8], off: u64) -> f64 {
    let b: [u8; 8] = bytes[off as usize..off as usize + 8].try_into().unwrap();
    f64::from_ne_bytes(b)
}

fn cases() -> u32 {
    if cfg!(miri) { 6 } else { 1500 }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn typed_views_read_what_the_model_reads(c in case(true), ops in prop::collection::vec(op(), 0..4)) {
        let bytes = c.bytes();
        let mut view = View::<f64>::new(bytes, c.layout).unwrap();
        let mut layout = c.layout;
        for o in &ops {
            let Some(next) = apply(&layout, o) else { continue };
            view = match *o {
                Op::Slice(a, start, stop, step) => view.slice_axis(a % layout.ndim(), Slice::new(start, stop, step)).unwrap(),
                Op::Index(a, i) => view.index_axis(a % layout.ndim(), us(i % layout.shape()[a % layout.ndim()].max(1))).unwrap(),
                Op::Transpose => view.t(),
                Op::Permute(_) | Op::Reshape(_) => View::<f64>::new(bytes, next).unwrap(),
            };
            layout = next;
            prop_assert_eq!(view.layout(), &layout);
        }
        let want: Vec<u64> = indices(layout.shape()).iter().map(|ix| model_offset(&layout, ix)).collect();
        let got: Vec<f64> = view.iter().copied().collect();
        prop_assert_eq!(got.len(), want.len());
        for ((ix, &off), g) in indices(layout.shape()).iter().zip(&want).zip(&got) {
            let expect = read_f64(bytes, off);
            prop_assert_eq!(g.to_bits(), expect.to_bits());
            prop_assert_eq!(view.get(&ix_us(ix)).unwrap().to_bits(), expect.to_bits());
        }
        // fold (the fast path) agrees with next()
        let folded = view.iter().fold(Vec::new(), |mut v, x| { v.push(x.to_bits()); v });
        prop_assert_eq!(folded, got.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(view.to_vec().iter().map(|x| x.to_bits()).collect::<Vec<_>>(), got.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        if let Some(s) = view.as_slice() {
            prop_assert!(layout.is_c_contiguous());
            prop_assert_eq!(s.len(), got.len());
        }
        // The byte view agrees, element by element.
        let bv = ByteView::new(bytes, layout, DType::parse(if cfg!(target_endian = "little") { "<f8" } else { ">f8" }).unwrap()).unwrap();
        for (ix, &off) in indices(layout.shape()).iter().zip(&want) {
            prop_assert_eq!(bv.element(&ix_us(ix)).unwrap(), &bytes[off as usize..off as usize + 8]);
            prop_assert_eq!(bv.read::<f64>(&ix_us(ix)).unwrap().to_bits(), read_f64(bytes, off).to_bits());
        }
        let packed: Vec<u8> = want.iter().flat_map(|&o| bytes[o as usize..o as usize + 8].to_vec()).collect();
        prop_assert_eq!(bv.to_contiguous(), packed);
        // The shared (copying) view reads the same elements, by every route.
        let sv = view.as_volatile();
        let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(sv.iter().collect()), bits(got.clone()));
        prop_assert_eq!(bits(sv.iter().fold(Vec::new(), |mut v, x| { v.push(x); v })), bits(got.clone()));
        prop_assert_eq!(bits(sv.to_vec()), bits(got.clone()));
        for (ix, g) in indices(layout.shape()).iter().zip(&got) {
            prop_assert_eq!(sv.get(&ix_us(ix)).unwrap().to_bits(), g.to_bits());
        }
        prop_assert_eq!(VolatileView::<f64>::new(bytes, layout).unwrap().to_vec().len(), got.len());
    }

    #[test]
    fn byte_views_read_unaligned_layouts(c in case(false)) {
        let bytes = c.bytes();
        let bv = ByteView::new(bytes, c.layout, DType::parse(">u8").unwrap()).unwrap();
        for ix in indices(c.layout.shape()) {
            let off = model_offset(&c.layout, &ix) as usize;
            let raw: [u8; 8] = bytes[off..off + 8].try_into().unwrap();
            prop_assert_eq!(bv.read::<u64>(&ix_us(&ix)).unwrap(), u64::from_be_bytes(raw));
        }
        // A typed view refuses misaligned layouts with an error, never UB.
        if c.layout.offset() % 8 != 0 || c.layout.strides().iter().zip(c.layout.shape()).any(|(s, &d)| d > 1 && s % 8 != 0) {
            prop_assert!(View::<f64>::new(bytes, c.layout).is_err());
        }
    }

    #[test]
    fn writes_land_where_the_model_says(c in case(true), value in any::<u64>()) {
        let mut words = c.words.clone();
        let mut view = ViewMut::<u64>::new(bytemuck::cast_slice_mut(&mut words), c.layout).unwrap();
        view.fill(value);
        let mut expect = c.words.clone();
        for ix in indices(c.layout.shape()) {
            expect[(model_offset(&c.layout, &ix) / 8) as usize] = value;
        }
        prop_assert_eq!(&words, &expect);
        // The shared writer lands on the same bytes, by fill and by copy_from_slice.
        let mut shared = c.words.clone();
        let mut sv = VolatileViewMut::<u64>::new(bytemuck::cast_slice_mut(&mut shared), c.layout).unwrap();
        sv.fill(value);
        prop_assert_eq!(&shared, &expect);
        let mut shared = c.words.clone();
        let mut sv = VolatileViewMut::<u64>::new(bytemuck::cast_slice_mut(&mut shared), c.layout).unwrap();
        let n = sv.len();
        sv.copy_from_slice(&vec![value; n]).unwrap();
        prop_assert_eq!(&shared, &expect);
        // iter_mut, where elements do not overlap, also agrees.
        let mut again = c.words.clone();
        let mut view = ViewMut::<u64>::new(bytemuck::cast_slice_mut(&mut again), c.layout).unwrap();
        if let Some(it) = view.iter_mut() {
            prop_assert!(!c.layout.may_overlap());
            it.for_each(|x| *x = value);
            prop_assert_eq!(&again, &expect);
        }
    }

    #[test]
    fn split_writers_are_disjoint_and_cover_the_view(c in case(true), at in 0u64..6) {
        if c.layout.ndim() == 0 || c.layout.may_overlap() {
            return Ok(());
        }
        let mut words = vec![0u64; c.words.len()];
        let sv = VolatileViewMut::<u64>::new(bytemuck::cast_slice_mut(&mut words), c.layout).unwrap();
        let n = sv.len();
        let (mut a, mut b) = sv.split_axis(0, us(at)).unwrap();
        prop_assert_eq!(a.len() + b.len(), n);
        a.for_each_mut(|x| *x += 1);
        b.for_each_mut(|x| *x += 1);
        // Every element was written exactly once.
        let mut expect = vec![0u64; c.words.len()];
        for ix in indices(c.layout.shape()) {
            expect[(model_offset(&c.layout, &ix) / 8) as usize] += 1;
        }
        prop_assert_eq!(words, expect);
    }
}

#[test]
fn shared_writers_fill_disjoint_chunks_from_threads() {
    let mut data = vec![0u32; 7 * 5];
    let layout = Layout::contiguous(4, &[7, 5], Order::C).unwrap();
    let v = VolatileViewMut::<u32>::new(bytemuck::cast_slice_mut(&mut data), layout).unwrap();
    let chunks = v.axis_chunks(0, 3).unwrap();
    assert_eq!(
        chunks.iter().map(|c| c.shape()[0]).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    std::thread::scope(|s| {
        for (k, mut chunk) in chunks.into_iter().enumerate() {
            s.spawn(move || chunk.fill(k as u32 + 1));
        }
    });
    let want: Vec<u32> = (0..35).map(|i| (i / 15) as u32 + 1).collect();
    assert_eq!(data, want);
    // Overlapping layouts cannot be split (the halves would share bytes).
    let mut data = vec![0u32; 4];
    let broadcast = Layout::new(4, &[3, 4], &[0, 4], 0, 16).unwrap();
    let v = VolatileViewMut::<u32>::new(bytemuck::cast_slice_mut(&mut data), broadcast).unwrap();
    assert!(matches!(
        v.split_axis(0, 1),
        Err(stridemap::ViewError::Overlapping)
    ));
    let mut data = vec![0u32; 4];
    let v = VolatileViewMut::<u32>::new(
        bytemuck::cast_slice_mut(&mut data),
        Layout::contiguous(4, &[4], Order::C).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        v.axis_chunks(0, 0),
        Err(stridemap::ViewError::ZeroChunk)
    ));
}

/// Issue 20, item 6b: parts that interleave in memory (columns of a C-ordered array) are
/// held to their own elements by the writers themselves (a check per access), so threads
/// fill them at once; Miri runs this.
#[test]
fn interleaved_writers_fill_columns_from_threads() {
    let mut data = vec![0u32; 4 * 6];
    let layout = Layout::contiguous(4, &[4, 6], Order::C).unwrap();
    let v = VolatileViewMut::<u32>::new(bytemuck::cast_slice_mut(&mut data), layout).unwrap();
    let chunks = v.axis_chunks(1, 2).unwrap();
    assert_eq!(chunks.len(), 3);
    std::thread::scope(|s| {
        for (k, mut chunk) in chunks.into_iter().enumerate() {
            s.spawn(move || {
                chunk.fill(k as u32 + 1);
                // A row of the chunk is contiguous: one copy, checked element by element.
                let mut row = chunk.reborrow().index_axis(0, 3).unwrap();
                row.copy_from_slice(&[9, 9]).unwrap();
                assert_eq!(row.as_volatile().to_vec(), [9, 9]);
            });
        }
    });
    let want: Vec<u32> = (0..24)
        .map(|i| if i >= 18 { 9 } else { (i % 6 / 2) as u32 + 1 })
        .collect();
    assert_eq!(data, want);
    // Split once more: a half of a half.
    let v = VolatileViewMut::<u32>::new(bytemuck::cast_slice_mut(&mut data), layout).unwrap();
    let (left, right) = v.split_axis(1, 3).unwrap();
    let (mut ll, mut lr) = left.split_axis(1, 1).unwrap();
    let mut right = right;
    std::thread::scope(|s| {
        s.spawn(move || ll.fill(7));
        s.spawn(move || lr.fill(8));
        s.spawn(move || right.fill(0));
    });
    assert_eq!(&data[..6], [7, 8, 8, 0, 0, 0]);
}

#[test]
fn ergonomics_iterate_temporaries_index_and_walk_axes() {
    let data: Vec<f64> = (0..12).map(f64::from).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let layout = Layout::contiguous(8, &[3, 4], Order::C).unwrap();
    // The iterator of a temporary view outlives it (no E0716).
    let total: f64 = View::<f64>::new(bytes, layout).unwrap().iter().sum();
    assert_eq!(total, 66.0);
    let it = View::<f64>::new(bytes, layout).unwrap().t().iter();
    assert_eq!(it.copied().take(3).collect::<Vec<_>>(), [0.0, 4.0, 8.0]);
    let v = View::<f64>::new(bytes, layout).unwrap();
    assert_eq!((v[[2, 1]], v.len()), (9.0, 12));
    let rows: Vec<f64> = v.axis_iter(0).unwrap().map(|r| r.iter().sum()).collect();
    assert_eq!(rows, [6.0, 22.0, 38.0]);
    let blocks: Vec<Vec<f64>> = v.axis_chunks(0, 2).unwrap().map(|b| b.to_vec()).collect();
    assert_eq!(blocks, [data[..8].to_vec(), data[8..].to_vec()]);
    assert!(matches!(
        v.axis_chunks(0, 0),
        Err(stridemap::ViewError::ZeroChunk)
    ));
    let cols: Vec<f64> = v
        .as_volatile()
        .axis_iter(1)
        .unwrap()
        .map(|c| c.iter().sum())
        .collect();
    assert_eq!(cols, [12.0, 15.0, 18.0, 21.0]);
    assert!(std::panic::catch_unwind(|| v[[3, 0]]).is_err());
    // Writable rows one after the other.
    let mut words = vec![0.0f64; 12];
    let mut w = ViewMut::<f64>::new(bytemuck::cast_slice_mut(&mut words), layout).unwrap();
    let mut k = 0.0;
    w.for_each_axis(0, |mut row| {
        k += 1.0;
        row.fill(k);
        Ok(())
    })
    .unwrap();
    assert_eq!(words[..5], [1.0, 1.0, 1.0, 1.0, 2.0]);
    let mut w = ViewMut::<f64>::new(bytemuck::cast_slice_mut(&mut words), layout).unwrap();
    w[[2, 3]] = -1.0;
    assert_eq!(w[[2, 3]], -1.0);
    assert_eq!(words[11], -1.0);
}

#[test]
fn misaligned_typed_access_says_what_to_do() {
    let words = [0u64; 4];
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let l = Layout::new(8, &[2], &[8], 3, 32).unwrap();
    let err = View::<f64>::new(bytes, l).unwrap_err();
    assert!(err.to_string().contains("byte view"), "{err}");
    // The base pointer itself misaligned.
    let l = Layout::new(8, &[2], &[8], 0, 31).unwrap();
    assert!(View::<f64>::new(&bytes[1..], l).is_err());
    // Wrong itemsize.
    let l = Layout::new(4, &[2], &[4], 0, 32).unwrap();
    assert!(View::<f64>::new(bytes, l).is_err());
    // A buffer shorter than the layout's span.
    let l = Layout::new(8, &[4], &[8], 0, 32).unwrap();
    assert!(View::<f64>::new(&bytes[..24], l).is_err());
}

#[test]
fn zero_d_and_empty_views() {
    let words = [7u64, 9];
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let scalar = View::<u64>::new(bytes, Layout::new(8, &[], &[], 8, 16).unwrap()).unwrap();
    assert_eq!(scalar.get(&[]).unwrap(), &9);
    assert_eq!(scalar.to_vec(), [9]);
    let empty = View::<u64>::new(bytes, Layout::new(8, &[0, 3], &[0, 8], 16, 16).unwrap()).unwrap();
    assert!(empty.is_empty() && empty.to_vec().is_empty() && empty.iter().next().is_none());
    assert!(empty.get(&[0, 0]).is_err());
}
