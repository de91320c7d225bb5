//! Layout against a naive model that enumerates every element.

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

/// All multi-indices of `shape` in C order.
fn indices(shape: &[u64]) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new()];
    for &d in shape {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..d).map(move |i| {
                    let mut p = prefix.clone();
                    p.push(i);
                    p
                })
            })
            .collect();
    }
    out
}

/// Offsets of every element, in exact arithmetic.
fn naive_offsets(shape: &[u64], strides: &[i64], offset: u64) -> Vec<i128> {
    indices(shape)
        .iter()
        .map(|ix| {
            ix.iter()
                .zip(strides)
                .fold(offset as i128, |acc, (&i, &s)| acc + i as i128 * s as i128)
        })
        .collect()
}

/// The model's verdict: valid iff every stride fits the buffer and every byte of every
/// element is inside it; then the span.
fn naive_validate(
    itemsize: u32,
    shape: &[u64],
    strides: &[i64],
    offset: u64,
    buffer_len: u64,
) -> Option<(u64, u64)> {
    if strides.iter().any(|s| s.unsigned_abs() > buffer_len) {
        return None;
    }
    let offs = naive_offsets(shape, strides, offset);
    if offs.is_empty() {
        return (offset <= buffer_len).then_some((offset, offset));
    }
    let lo = *offs.iter().min().unwrap();
    let hi = *offs.iter().max().unwrap() + itemsize as i128;
    (lo >= 0 && hi <= buffer_len as i128).then_some((lo as u64, hi as u64))
}

fn is_contiguous_model(l: &Layout, order: Order) -> bool {
    let offs: Vec<u64> = match order {
        Order::C => l.offsets().collect(),
        Order::F => l.transpose().offsets().collect(),
    };
    offs.iter()
        .enumerate()
        .all(|(i, &o)| o == offs[0] + i as u64 * u64::from(l.itemsize()))
}

prop_compose! {
    fn small_layout()(ndim in 0usize..5)(
        shape in prop::collection::vec(0u64..5, ndim),
        strides in prop::collection::vec(-40i64..40, ndim),
        itemsize in 1u32..9,
        offset in 0u64..160,
        buffer_len in 0u64..240,
    ) -> (u32, Vec<u64>, Vec<i64>, u64, u64) {
        (itemsize, shape, strides, offset, buffer_len)
    }
}

prop_compose! {
    /// Layouts that are valid by construction: the offset is moved so the span fits.
    fn valid_layout()((itemsize, shape, strides, _, _) in small_layout(), slack in 0u64..16)
        -> Layout {
        let neg: i64 = shape.iter().zip(&strides)
            .map(|(&d, &s)| if d > 0 { (d as i64 - 1) * s.min(0) } else { 0 }).sum();
        let pos: i64 = shape.iter().zip(&strides)
            .map(|(&d, &s)| if d > 0 { (d as i64 - 1) * s.max(0) } else { 0 }).sum();
        let offset = (-neg) as u64 + slack;
        let max_stride = strides.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        let buffer_len = (offset + pos as u64 + u64::from(itemsize) + slack).max(max_stride);
        Layout::new(itemsize, &shape, &strides, offset, buffer_len).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 2000 }))]

    #[test]
    fn validation_agrees_with_the_model((itemsize, shape, strides, offset, buffer_len) in small_layout()) {
        let got = Layout::new(itemsize, &shape, &strides, offset, buffer_len);
        let want = naive_validate(itemsize, &shape, &strides, offset, buffer_len);
        match (got, want) {
            (Ok(l), Some((lo, hi))) => {
                prop_assert_eq!(l.span(), lo..hi);
                let model: Vec<u64> = naive_offsets(&shape, &strides, offset)
                    .into_iter().map(|o| o as u64).collect();
                prop_assert_eq!(l.offsets().collect::<Vec<_>>(), model.clone());
                // fold (the fast path) agrees with next().
                let folded = l.offsets().fold(Vec::new(), |mut v, o| { v.push(o); v });
                prop_assert_eq!(folded, model.clone());
                // Resuming fold after a partial walk agrees too.
                let mut it = l.offsets();
                let k = model.len() / 2;
                let mut head: Vec<u64> = it.by_ref().take(k).collect();
                head.extend(it.fold(Vec::new(), |mut v, o| { v.push(o); v }));
                prop_assert_eq!(head, model.clone());
                prop_assert_eq!(l.len(), model.len() as u64);
                prop_assert_eq!(l.is_c_contiguous(), is_contiguous_model(&l, Order::C));
                prop_assert_eq!(l.is_f_contiguous(), is_contiguous_model(&l, Order::F));
                for (ix, &o) in indices(&shape).iter().zip(&model) {
                    prop_assert_eq!(l.element_offset(ix), Ok(o));
                }
            }
            (Err(e), None) => {
                prop_assert!(matches!(e, LayoutError::StrideTooLarge { .. } | LayoutError::OutOfBounds { .. }), "{e:?}");
            }
            (got, want) => prop_assert!(false, "layout {:?} but model {:?}", got, want),
        }
    }

    #[test]
    fn slicing_agrees_with_the_model(l in valid_layout(), axis in 0usize..4,
                                     start in prop::option::of(-6i64..6),
                                     stop in prop::option::of(-6i64..6),
                                     step in prop_oneof![-4i64..0, 1i64..5]) {
        prop_assume!(l.ndim() > 0);
        let axis = axis % l.ndim();
        let s = Slice::new(start, stop, step);
        let v = l.slice_axis(axis, s).unwrap();
        let (first, n) = s.indices(l.shape()[axis]).unwrap();
        let want: Vec<u64> = indices(l.shape()).iter()
            .filter(|ix| {
                let i = ix[axis] as i64;
                let rel = i - first as i64;
                rel % step == 0 && rel / step >= 0 && ((rel / step) as u64) < n
            })
            .map(|ix| l.element_offset(ix).unwrap())
            .collect();
        // Elements along a negative-step axis come in reverse; compare as multisets of
        // positions, then check the order along the sliced axis separately.
        let mut got: Vec<u64> = v.offsets().collect();
        let mut want_sorted = want.clone();
        got.sort_unstable();
        want_sorted.sort_unstable();
        prop_assert_eq!(got, want_sorted);
        for k in 0..n {
            let mut ix = vec![0u64; l.ndim()];
            if v.is_empty() { break; }
            ix[axis] = k;
            let mut src = ix.clone();
            src[axis] = (first as i64 + k as i64 * step) as u64;
            prop_assert_eq!(v.element_offset(&ix), l.element_offset(&src));
        }
    }

    #[test]
    fn permute_and_index_agree(l in valid_layout(), seed in any::<u64>(), pick in 0u64..5) {
        let n = l.ndim();
        let mut axes: Vec<usize> = (0..n).collect();
        let mut x = seed;
        for i in (1..n).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            axes.swap(i, (x >> 33) as usize % (i + 1));
        }
        let p = l.permute(&axes).unwrap();
        for ix in indices(p.shape()) {
            let mut src = vec![0u64; n];
            for (k, &a) in axes.iter().enumerate() { src[a] = ix[k]; }
            prop_assert_eq!(p.element_offset(&ix), l.element_offset(&src));
        }
        prop_assert_eq!(l.transpose(), l.permute(&(0..n).rev().collect::<Vec<_>>()).unwrap());
        if n > 0 && pick < l.shape()[0] {
            let sub = l.index_axis(0, pick).unwrap();
            for ix in indices(sub.shape()) {
                let mut src = vec![pick];
                src.extend(&ix);
                prop_assert_eq!(sub.element_offset(&ix), l.element_offset(&src));
            }
        }
    }

    #[test]
    fn reshape_keeps_the_element_sequence(l in valid_layout(), how in 0usize..5, at in 0usize..4,
                                          fortran in any::<bool>()) {
        let order = if fortran { Order::F } else { Order::C };
        let size = l.len();
        let d = l.shape().to_vec();
        // A new shape with the same size: flatten, merge two neighbours, split one axis,
        // add length-1 axes, or regroup everything as (2, size / 2).
        let (new_shape, may_copy): (Vec<u64>, bool) = match how {
            0 => (vec![size], true),
            1 if d.len() >= 2 => {
                let k = at % (d.len() - 1);
                let mut v = d[..k].to_vec();
                v.push(d[k] * d[k + 1]);
                v.extend(&d[k + 2..]);
                (v, true)
            }
            2 if !d.is_empty() && d[at % d.len()] % 2 == 0 => {
                let k = at % d.len();
                let mut v = d[..k].to_vec();
                v.extend([2, d[k] / 2]);
                v.extend(&d[k + 1..]);
                (v, false)
            }
            3 => { let mut v = vec![1]; v.extend(&d); v.push(1); (v, false) }
            _ if size % 2 == 0 && size > 0 => (vec![2, size / 2], true),
            _ => (vec![size, 1], true),
        };
        let seq = |x: &Layout| -> Vec<u64> {
            match order { Order::C => x.offsets().collect(), Order::F => x.transpose().offsets().collect() }
        };
        match l.reshape(&new_shape, order) {
            Ok(r) => {
                prop_assert_eq!(r.shape(), &new_shape[..]);
                prop_assert_eq!(seq(&r), seq(&l));
            }
            Err(e) => {
                prop_assert_eq!(e, LayoutError::ReshapeNeedsCopy);
                let contiguous = match order { Order::C => l.is_c_contiguous(), Order::F => l.is_f_contiguous() };
                prop_assert!(!contiguous, "a contiguous array always reshapes");
                // Only merging can need a copy: splitting an axis or adding 1s never does.
                prop_assert!(may_copy, "{:?} -> {:?}", l, new_shape);
            }
        }
    }

    #[test]
    fn no_overlap_claim_is_true(l in valid_layout()) {
        if !l.may_overlap() {
            let mut offs: Vec<u64> = l.offsets().collect();
            offs.sort_unstable();
            for w in offs.windows(2) {
                prop_assert!(w[1] >= w[0] + u64::from(l.itemsize()), "{:?}", l);
            }
        }
    }
}

#[test]
fn contiguity_follows_numpy() {
    let c = Layout::contiguous(8, &[3, 4], Order::C).unwrap();
    assert!(c.is_c_contiguous() && !c.is_f_contiguous());
    let f = c.transpose();
    assert!(f.is_f_contiguous() && !f.is_c_contiguous());
    // Length-1 axes are ignored (relaxed strides): a single row is both, whatever its
    // first stride, as numpy says of np.ones((1, 4)).
    let row = Layout::new(8, &[1, 4], &[57, 8], 0, 64).unwrap();
    assert!(row.is_c_contiguous() && row.is_f_contiguous());
    let one = Layout::new(8, &[1, 1], &[0, 0], 0, 8).unwrap();
    assert!(one.is_c_contiguous() && one.is_f_contiguous());
    // Empty arrays are both; 0-d arrays are both.
    let empty = Layout::contiguous(8, &[0, 4], Order::C).unwrap();
    assert!(empty.is_c_contiguous() && empty.is_f_contiguous());
    assert_eq!(empty.strides(), &[0, 0]);
    let scalar = Layout::new(4, &[], &[], 4, 8).unwrap();
    assert!(scalar.is_c_contiguous() && scalar.is_f_contiguous());
    assert_eq!((scalar.len(), scalar.span()), (1, 4..8));
    // Broadcast and reversed are neither.
    let bcast = Layout::new(8, &[3, 4], &[0, 8], 0, 32).unwrap();
    assert!(!bcast.is_c_contiguous() && bcast.may_overlap());
    let rev = c.slice_axis(0, Slice::REVERSED).unwrap();
    assert!(!rev.is_c_contiguous());
}

#[test]
fn joblib_failure_cases_have_the_right_offsets() {
    let m = Layout::contiguous(8, &[1000], Order::C).unwrap();
    // m[::-1]: element 0 is the last double, not the lowest byte.
    let r = m.slice_axis(0, Slice::REVERSED).unwrap();
    assert_eq!(
        (r.offset(), r.strides(), r.span()),
        (7992, &[-8][..], 0..8000)
    );
    // m[::-3]
    let r3 = m.slice_axis(0, Slice::step(-3)).unwrap();
    assert_eq!(
        (r3.len(), r3.offset(), r3.strides()),
        (334, 7992, &[-24][..])
    );
    assert_eq!(r3.offsets().last(), Some(0));
    // m[500:490:-1]
    let w = m
        .slice_axis(0, Slice::new(Some(500), Some(490), -1))
        .unwrap();
    assert_eq!(
        w.offsets().collect::<Vec<_>>(),
        (491..=500).rev().map(|i| i * 8).collect::<Vec<u64>>()
    );
    // The transpose of a C-ordered 2-d array is F-contiguous with swapped strides.
    let c = Layout::contiguous(8, &[10, 20], Order::C).unwrap();
    let t = c.transpose();
    assert_eq!((t.shape(), t.strides()), (&[20, 10][..], &[8, 160][..]));
    assert_eq!(t.element_offset(&[3, 7]), c.element_offset(&[7, 3]));
}

#[test]
fn rules_are_reported_with_their_values() {
    assert_eq!(
        Layout::new(8, &[2], &[8, 8], 0, 16),
        Err(LayoutError::AxisCountMismatch {
            shape: 1,
            strides: 2
        })
    );
    assert_eq!(
        Layout::new(1, &[1; 33], &[0; 33], 0, 1),
        Err(LayoutError::TooManyAxes { ndim: 33 })
    );
    assert_eq!(
        Layout::new(8, &[u64::MAX / 4, 8], &[8, 8], 0, 16),
        Err(LayoutError::SizeOverflow { axis: 0 })
    );
    assert_eq!(
        Layout::new(8, &[1 << 40, 1 << 20], &[0, 0], 0, 16),
        Err(LayoutError::SizeOverflow { axis: 1 })
    );
    // Zero-length axes count as 1 for the size rule, as in numpy.
    assert_eq!(
        Layout::new(8, &[0, 1 << 62], &[0, 0], 0, 16),
        Err(LayoutError::SizeOverflow { axis: 1 })
    );
    assert_eq!(
        Layout::new(8, &[2], &[17], 0, 16),
        Err(LayoutError::StrideTooLarge {
            axis: 0,
            stride: 17,
            buffer_len: 16
        })
    );
    // One byte out at each end.
    assert_eq!(
        Layout::new(8, &[2], &[8], 1, 16),
        Err(LayoutError::OutOfBounds {
            lo: 1,
            hi: 17,
            buffer_len: 16
        })
    );
    assert_eq!(
        Layout::new(8, &[2], &[-8], 7, 16),
        Err(LayoutError::OutOfBounds {
            lo: -1,
            hi: 15,
            buffer_len: 16
        })
    );
    // Unaligned offsets are fine; an empty array touches nothing but its offset must fit.
    assert!(Layout::new(8, &[2], &[8], 3, 19).is_ok());
    assert!(Layout::new(8, &[0, 5], &[8, 8], 16, 16).is_ok());
    assert!(Layout::new(8, &[0], &[8], 17, 16).is_err());
    // The largest sizes do not overflow anything.
    assert!(Layout::new(1, &[i64::MAX as u64], &[1], 0, i64::MAX as u64).is_ok());
    assert!(matches!(
        Layout::new(
            1,
            &[i64::MAX as u64, 1],
            &[i64::MAX, i64::MIN + 1],
            0,
            i64::MAX as u64
        ),
        Err(LayoutError::OutOfBounds { .. })
    ));
    assert!(Layout::new(2, &[1 << 62], &[i64::MAX], 0, i64::MAX as u64).is_err());
}

#[test]
fn slicing_edge_cases() {
    let m = Layout::contiguous(8, &[10], Order::C).unwrap();
    // A huge step selects one element and keeps a stride that fits the buffer.
    let one = m.slice_axis(0, Slice::step(i64::MAX)).unwrap();
    assert_eq!((one.len(), one.strides()), (1, &[8][..]));
    let none = m.slice_axis(0, Slice::range(5, 5)).unwrap();
    assert!(none.is_empty());
    assert_eq!(m.slice_axis(0, Slice::step(0)), Err(LayoutError::ZeroStep));
    assert_eq!(
        m.slice_axis(1, Slice::FULL),
        Err(LayoutError::NoSuchAxis { axis: 1, ndim: 1 })
    );
    assert_eq!(m.permute(&[1]), Err(LayoutError::NotAPermutation));
    assert_eq!(
        m.index_axis(0, 10),
        Err(LayoutError::IndexOutOfRange {
            axis: 0,
            index: 10,
            len: 10
        })
    );
    assert_eq!(
        m.reshape(&[3, 3], Order::C),
        Err(LayoutError::ReshapeSizeMismatch { from: 10, to: 9 })
    );
}
