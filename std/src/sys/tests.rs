//! The `sys` module's own tests: maps, volatile handles, splits and parts against naive models.

use proptest::prelude::*;
use stridemap_core::Layout;

/// A copy-on-write map made here: at any offset (not a page boundary), reading the file's
/// bytes, keeping its writes to itself, and gone from the process's maps once dropped.
#[test]
fn private_maps_start_anywhere_keep_their_writes_and_go_when_dropped() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let fd = rustix::fs::memfd_create("stridemap-private-test", rustix::fs::MemfdFlags::CLOEXEC)
        .unwrap();
    let mut file = std::fs::File::from(fd);
    let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    file.write_all(&data).unwrap();
    let maps = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains("stridemap-private-test"))
            .count()
    };
    let before = maps();
    let map = super::map_private(&file, 5000, 100).unwrap();
    assert_eq!(map.map.len(), 100);
    assert_eq!(maps(), before + 1);
    let p = map.map.as_mut_ptr();
    // SAFETY: `p` is the first of the map's 100 readable, writable bytes; no reference to
    // them exists; nothing else writes the file meanwhile.
    let (first, last) = unsafe { (p.read_volatile(), p.add(99).read_volatile()) };
    assert_eq!((first, last), (data[5000], data[5099]));
    // SAFETY: as above.
    unsafe { p.write_volatile(first.wrapping_add(1)) };
    let mut on_file = [0u8];
    file.read_exact_at(&mut on_file, 5000).unwrap();
    assert_eq!(
        on_file[0], data[5000],
        "a private map's write reached the file"
    );
    drop(map);
    assert_eq!(maps(), before, "the map outlived its value");
}

use super::{Part, VolatileBytesMut, slots, split_ranges};

/// A layout as [`layout`] makes, its elements moved up by `shift` bytes (not always a
/// whole element), over `len` slots of its itemsize (not always enough).
fn placed() -> impl Strategy<Value = (Layout, usize)> {
    (layout(), 0u64..20, 0usize..80).prop_filter_map("fits", |(l, shift, len)| {
        let l = Layout::new(
            l.itemsize(),
            l.shape(),
            l.strides(),
            l.offset() + shift,
            1 << 13,
        )
        .ok()?;
        Some((l, len))
    })
}

/// The naive model: every element's slot in C order (offset plus the sum of index times
/// stride, in bytes, divided by the itemsize), if each is whole and below `len` (for no
/// elements: if the offset is whole and at most `len`).
fn model_slots(l: &Layout, len: usize) -> Option<Vec<usize>> {
    let size = i128::from(l.itemsize());
    let offset = i128::from(l.offset());
    if indices(l.shape()).is_empty() {
        return (offset % size == 0 && offset / size <= len as i128).then(Vec::new);
    }
    indices(l.shape())
        .iter()
        .map(|ix| {
            let b = offset
                + ix.iter()
                    .zip(l.strides())
                    .map(|(&i, &s)| i128::from(i) * i128::from(s))
                    .sum::<i128>();
            (b % size == 0 && b >= 0 && b / size < len as i128).then(|| (b / size) as usize)
        })
        .collect()
}

/// The slots `iter_mut` hands out over `len` `T`s, in order.
fn iter_slots<T: Default + Clone>(l: &Layout, len: usize) -> Option<Vec<usize>> {
    let mut buf = vec![T::default(); len];
    let base = buf.as_ptr() as usize;
    let it = super::iter_mut(&mut buf, l)?;
    Some(
        it.map(|e| (e as *mut T as usize - base) / size_of::<T>())
            .collect(),
    )
}

fn all_distinct(v: &[usize]) -> bool {
    let mut w = v.to_vec();
    w.sort_unstable();
    w.windows(2).all(|p| p[0] != p[1])
}

/// `layout`'s elements through `array_view` (if `mutable`, `array_view_mut`) over `len`
/// `T`s valued by slot, against the model.
#[cfg(feature = "ndarray")]
fn ndarray_matches<T: From<u8> + Copy + PartialEq + std::fmt::Debug>(
    l: &Layout,
    len: usize,
) -> Result<(), TestCaseError> {
    let value = |i: usize| T::from((i % 251) as u8);
    let mut buf: Vec<T> = (0..len).map(value).collect();
    let model = model_slots(l, len);
    let got: Option<Vec<T>> = super::array_view(&buf, l).map(|v| v.iter().copied().collect());
    match &model {
        Some(m) => {
            let want: Vec<T> = m.iter().map(|&k| buf[k]).collect();
            prop_assert_eq!(got, Some(want));
        }
        None => prop_assert!(got.is_none()),
    }
    let got_mut: Option<Vec<T>> =
        super::array_view_mut(&mut buf, l).map(|v| v.iter().copied().collect());
    if let Some(g) = got_mut {
        let m = model.unwrap_or_default();
        prop_assert!(all_distinct(&m), "a mutable view of shared slots: {:?}", l);
        let want: Vec<T> = m.iter().map(|&k| value(k)).collect();
        prop_assert_eq!(g, want);
    }
    Ok(())
}

/// A layout of up to 3 axes (lengths 0–4, strides any multiple of the itemsize, negative
/// and zero included) over a buffer just large enough.
fn layout() -> impl Strategy<Value = Layout> {
    let axis = (0u64..5, -6i64..7);
    (
        prop::sample::select(vec![1u32, 2, 4, 8]),
        prop::collection::vec(axis, 0..4),
    )
        .prop_filter_map("a layout inside its buffer", |(size, axes)| {
            let shape: Vec<u64> = axes.iter().map(|a| a.0).collect();
            let strides: Vec<i64> = axes.iter().map(|a| a.1 * i64::from(size)).collect();
            // The offset that puts the lowest element at 0.
            let low: i64 = axes
                .iter()
                .zip(&strides)
                .map(|(a, &s)| {
                    if s < 0 && a.0 > 0 {
                        s * (a.0 as i64 - 1)
                    } else {
                        0
                    }
                })
                .sum();
            let offset = u64::try_from(-low).ok()?;
            Layout::new(size, &shape, &strides, offset, 1 << 12).ok()
        })
}

/// Every index of `shape`, in C order.
fn indices(shape: &[u64]) -> Vec<Vec<u64>> {
    let mut out = vec![vec![]];
    for &d in shape {
        out = out
            .into_iter()
            .flat_map(|ix| {
                (0..d).map(move |i| {
                    let mut ix = ix.clone();
                    ix.push(i);
                    ix
                })
            })
            .collect();
    }
    out
}

/// The naive model: each element's index and first byte.
fn elements(l: &Layout) -> Vec<(Vec<u64>, u64)> {
    indices(l.shape())
        .into_iter()
        .map(|ix| {
            let off = l.element_offset(&ix).unwrap();
            (ix, off)
        })
        .collect()
}

proptest! {
    /// `Part::new` accepts only layouts whose elements share no byte, and a part admits a
    /// byte range exactly when it lies inside one element whose index on the cut axis is
    /// in its range (so parts with disjoint ranges admit disjoint bytes).
    #[test]
    fn parts_admit_what_the_model_says(l in layout(), axis in 0usize..3, lo in 0u64..5, hi in 0u64..5) {
        let Some(part) = Part::new(&l, axis, lo, hi) else {
            // Refused: only when the axis is missing or two elements may share a byte.
            prop_assert!(axis >= l.ndim() || l.may_overlap());
            return Ok(());
        };
        prop_assert!(!l.may_overlap(), "core and the part disagree on {:?}", l);
        let size = u64::from(l.itemsize());
        let els = elements(&l);
        for (i, (_, a)) in els.iter().enumerate() {
            for (_, b) in &els[i + 1..] {
                prop_assert!(a + size <= *b || b + size <= *a, "elements share a byte");
            }
        }
        for off in 0..l.span().end + 2 * size {
            for n in [1, size, 2 * size] {
                let model = (off..off + n).all(|b| {
                    els.iter()
                        .any(|(ix, e)| *e <= b && b < e + size && (lo..hi).contains(&ix[axis]))
                });
                prop_assert_eq!(part.covers(off, n), model, "bytes {}..{}", off, off + n);
            }
        }
    }

    /// Split writers are allowed disjoint bytes, and each is allowed its own elements.
    #[test]
    fn split_pieces_are_allowed_disjoint_bytes(l in layout(), axis in 0usize..3, cut in 0u64..5) {
        if axis >= l.ndim() {
            return Ok(());
        }
        let len = l.shape()[axis];
        let bounds = [0, cut.min(len), len];
        let mut buf = vec![0u8; 1 << 12];
        let whole = VolatileBytesMut::from_slice(&mut buf);
        let Some(pieces) = split_ranges(whole, &l, axis, &bounds) else {
            prop_assert!(l.may_overlap());
            return Ok(());
        };
        let size = l.itemsize() as usize;
        for (k, (h, piece)) in pieces.iter().enumerate() {
            for ix in indices(piece.shape()) {
                let off = piece.element_offset(&ix).unwrap() as usize;
                prop_assert!(h.allows(off, size), "piece {} is refused its element", k);
            }
        }
        for off in 0..buf_len(&l) {
            let owners = pieces.iter().filter(|(h, _)| h.allows(off, 1)).count();
            prop_assert!(owners <= 1, "byte {} allowed to {} pieces", off, owners);
        }
    }
}

proptest! {
    /// `slots` accepts exactly the layouts whose elements are all whole slots inside,
    /// and finds their lowest and highest slot and count.
    #[test]
    fn slots_match_the_model((l, len) in placed()) {
        let size = l.itemsize() as usize;
        let got = slots(&l, size, len);
        let model = model_slots(&l, len);
        prop_assert_eq!(got.is_some(), model.is_some(), "{:?} over {}: {:?}", l, len, got);
        if let (Some(g), Some(m)) = (got, model) {
            prop_assert_eq!(g.count, m.len());
            prop_assert_eq!(g.first as u64 * l.itemsize() as u64, l.offset());
            if let (Some(&lo), Some(&hi)) = (m.iter().min(), m.iter().max()) {
                prop_assert_eq!((g.lowest, g.highest), (lo, hi));
            }
        }
    }

    /// `distinct` accepts only layouts whose elements occupy distinct slots, and
    /// `iter_mut` visits exactly the model's slots, in C order.
    #[test]
    fn distinct_and_iter_mut_match_the_model((l, len) in placed()) {
        let size = l.itemsize() as usize;
        let model = model_slots(&l, len);
        if let Some(s) = slots(&l, size, len) {
            let m = model.clone().unwrap_or_default();
            if s.distinct() {
                prop_assert!(all_distinct(&m), "shared slots accepted: {:?}", l);
            }
            // Contiguous layouts are accepted.
            if l.is_c_contiguous() {
                prop_assert!(s.distinct(), "{:?} refused", l);
            }
        }
        let got = match size {
            1 => iter_slots::<u8>(&l, len),
            2 => iter_slots::<u16>(&l, len),
            4 => iter_slots::<u32>(&l, len),
            _ => iter_slots::<u64>(&l, len),
        };
        if let Some(g) = got {
            prop_assert_eq!(Some(g), model);
        } else {
            prop_assert!(model.is_none() || !slots(&l, size, len).unwrap().distinct());
        }
    }
}

#[cfg(feature = "ndarray")]
proptest! {
    /// The ndarray views show the model's elements, in logical order.
    #[test]
    fn ndarray_views_match_the_model((l, len) in placed()) {
        match l.itemsize() {
            1 => ndarray_matches::<u8>(&l, len)?,
            2 => ndarray_matches::<u16>(&l, len)?,
            4 => ndarray_matches::<u32>(&l, len)?,
            _ => ndarray_matches::<u64>(&l, len)?,
        }
    }
}

fn buf_len(l: &Layout) -> usize {
    (l.span().end as usize + 16).min(1 << 12)
}
