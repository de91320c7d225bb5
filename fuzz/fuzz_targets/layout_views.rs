//! Layouts and every sub-view of them over real memory (the `Layout` API, which std's views
//! are built on): an arbitrary layout over a buffer of arbitrary length, then a sequence of
//! `slice_axis`, `index_axis`, `permute`, `transpose`, `reshape` and `rebase` with arbitrary
//! arguments. Each layout that exists is read element by element from the buffer by plain
//! slice indexing (a stray offset panics) and checked against the naive model; each sub-view
//! must exist exactly when the model's view is valid, with the model's shape, strides and
//! offset, and its elements must be the parent's elements the model picks.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stridemap_core::{Layout, LayoutError, MAX_NDIM, Order, Slice};
use stridemap_fuzz::model::{self, Geometry, MAX_ELEMENTS};

/// Operations applied to one input at most.
const MAX_OPS: usize = 16;

#[derive(Arbitrary, Debug)]
struct Input {
    root: Root,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Root {
    /// `Layout::new` with at most 4 axes over a buffer of `buffer_len` bytes.
    New {
        itemsize: u8,
        axes: Vec<(u8, i16)>,
        offset: u16,
        buffer_len: u16,
    },
    /// `Layout::contiguous` with at most 5 axes.
    Contiguous {
        itemsize: u8,
        shape: Vec<u8>,
        fortran: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Slice {
        axis: u8,
        start: Option<Int>,
        stop: Option<Int>,
        step: Int,
    },
    Index {
        axis: u8,
        index: Int,
    },
    Permute(Vec<u8>),
    Transpose,
    Reshape {
        dims: Vec<Dim>,
        fortran: bool,
    },
    Rebase {
        shift: u16,
        len: u16,
    },
}

/// A slice bound, step or index: small (the interesting range) or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Int {
    Small(i8),
    Any(i64),
}

impl Int {
    fn get(self) -> i64 {
        match self {
            Int::Small(v) => i64::from(v),
            Int::Any(v) => v,
        }
    }
}

/// A reshape dimension; `Rest` is numpy's -1 (the first one takes what the others leave).
#[derive(Arbitrary, Debug)]
enum Dim {
    Small(u8),
    Any(u64),
    Rest,
}

fn order(fortran: bool) -> Order {
    if fortran { Order::F } else { Order::C }
}

/// What an operation must give: an argument error, or the view `geometry` (which exists iff
/// the model finds it valid) whose element at each C-order position is the parent's element
/// at `pick[position]` (a position in the parent's C order).
enum Want {
    Error(LayoutError),
    View {
        geometry: Geometry,
        pick: Vec<usize>,
    },
}

impl Want {
    /// The view whose elements are the parent's at the parent indices `source(child index)`.
    fn view(parent: &Geometry, geometry: Geometry, source: impl Fn(&[u64]) -> Vec<u64>) -> Want {
        let mut pick = Vec::new();
        model::for_each_index(&geometry.shape, |ix| {
            pick.push(model::linear(&source(ix), &parent.shape));
        });
        Want::View { geometry, pick }
    }
}

fn index_axis(g: &Geometry, axis: usize, index: u64) -> Want {
    let n = g.shape.len();
    if axis >= n {
        return Want::Error(LayoutError::NoSuchAxis { axis, ndim: n });
    }
    let (d, s) = (g.shape[axis], g.strides[axis]);
    if index >= d {
        return Want::Error(LayoutError::IndexOutOfRange {
            axis,
            index,
            len: d,
        });
    }
    let mut child = g.clone();
    child.shape.remove(axis);
    child.strides.remove(axis);
    child.offset += i128::from(index) * s;
    Want::view(g, child, |ix| {
        let mut p = ix.to_vec();
        p.insert(axis, index);
        p
    })
}

/// Python's `slice(start, stop, step).indices(len)` and the number of indices selected, as
/// CPython's `PySlice_AdjustIndices` computes them.
fn python_slice(len: u64, start: Option<i64>, stop: Option<i64>, step: i64) -> (i128, i128) {
    let (len, step) = (i128::from(len), i128::from(step));
    let (lower, upper) = if step < 0 { (-1, len - 1) } else { (0, len) };
    let adjust = |v: Option<i64>, default: i128| match v {
        None => default,
        Some(v) => {
            let v = i128::from(v);
            if v < 0 {
                (v + len).max(lower)
            } else {
                v.min(upper)
            }
        }
    };
    let (start, stop) = if step < 0 {
        (adjust(start, upper), adjust(stop, lower))
    } else {
        (adjust(start, lower), adjust(stop, upper))
    };
    let count = if step < 0 && stop < start {
        (start - stop - 1) / -step + 1
    } else if step > 0 && start < stop {
        (stop - start - 1) / step + 1
    } else {
        0
    };
    (start, count)
}

fn slice_axis(g: &Geometry, axis: usize, slice: Slice) -> Want {
    let n = g.shape.len();
    if axis >= n {
        return Want::Error(LayoutError::NoSuchAxis { axis, ndim: n });
    }
    if slice.step == 0 {
        return Want::Error(LayoutError::ZeroStep);
    }
    let (d, s) = (g.shape[axis], g.strides[axis]);
    let (first, count) = python_slice(d, slice.start, slice.stop, slice.step);
    let step = i128::from(slice.step);
    let mut child = g.clone();
    child.shape[axis] = count as u64;
    // The core's documented choice: with fewer than two elements the stride addresses
    // nothing and is kept; with none the offset is kept.
    if count > 1 {
        child.strides[axis] = s * step;
    }
    if count > 0 {
        child.offset += first * s;
    }
    Want::view(g, child, |ix| {
        let mut p = ix.to_vec();
        p[axis] = (first + i128::from(ix[axis]) * step) as u64;
        p
    })
}

fn permute(g: &Geometry, axes: &[usize]) -> Want {
    let n = g.shape.len();
    if axes.len() != n {
        return Want::Error(LayoutError::WrongAxisCount {
            expected: n,
            got: axes.len(),
        });
    }
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    if sorted != (0..n).collect::<Vec<_>>() {
        return Want::Error(LayoutError::NotAPermutation);
    }
    let mut child = g.clone();
    child.shape = axes.iter().map(|&a| g.shape[a]).collect();
    child.strides = axes.iter().map(|&a| g.strides[a]).collect();
    Want::view(g, child, |ix| {
        let mut p = vec![0; n];
        for (k, &a) in axes.iter().enumerate() {
            p[a] = ix[k];
        }
        p
    })
}

fn transpose(g: &Geometry) -> Want {
    Want::view(g, g.reversed(), |ix| ix.iter().rev().copied().collect())
}

/// The index at position `j` of `shape`'s enumeration in `order`.
fn unravel(mut j: u64, shape: &[u64], order: Order) -> Vec<u64> {
    let mut ix = vec![0; shape.len()];
    let mut place = |k: usize| {
        ix[k] = j % shape[k];
        j /= shape[k];
    };
    match order {
        Order::C => (0..shape.len()).rev().for_each(&mut place),
        Order::F => (0..shape.len()).for_each(&mut place),
    }
    ix
}

/// Offsets of `g`'s elements in `order`'s sequence.
fn sequence(g: &Geometry, order: Order) -> Vec<i128> {
    match order {
        Order::C => g.offsets(),
        Order::F => g.reversed().offsets(),
    }
}

/// A reshape exists without copying iff some strides give the same element sequence; if
/// any do, those found by probing each axis's unit step do (length-1 axes: stride 0).
fn reshape(g: &Geometry, dims: &[u64], order: Order) -> Want {
    if dims.len() > MAX_NDIM {
        return Want::Error(LayoutError::TooManyAxes { ndim: dims.len() });
    }
    let len = model::element_count(&g.shape).expect("enumerable") as u64;
    let to = dims.iter().try_fold(1u64, |p, &d| p.checked_mul(d));
    if to != Some(len) {
        return Want::Error(LayoutError::ReshapeSizeMismatch {
            from: len,
            to: to.unwrap_or(u64::MAX),
        });
    }
    let mut child = Geometry {
        shape: dims.to_vec(),
        strides: vec![0; dims.len()],
        ..g.clone()
    };
    if len > 0 {
        let seq = sequence(g, order);
        for k in 0..dims.len() {
            if dims[k] > 1 {
                let position = match order {
                    Order::C => dims[k + 1..].iter().product::<u64>(),
                    Order::F => dims[..k].iter().product::<u64>(),
                };
                child.strides[k] = seq[position as usize] - seq[0];
            }
        }
        if sequence(&child, order) != seq {
            return Want::Error(LayoutError::ReshapeNeedsCopy);
        }
    }
    let child_shape = child.shape.clone();
    Want::view(g, child, |ix| {
        let at = match order {
            Order::C => model::linear(ix, &child_shape),
            Order::F => {
                let rev: Vec<u64> = ix.iter().rev().copied().collect();
                let shape: Vec<u64> = child_shape.iter().rev().copied().collect();
                model::linear(&rev, &shape)
            }
        };
        unravel(at as u64, &g.shape, order)
    })
}

fn rebase(g: &Geometry, shift: u64, len: u64) -> Want {
    let child = Geometry {
        offset: g.offset - i128::from(shift),
        buffer_len: len,
        ..g.clone()
    };
    Want::view(g, child, |ix| ix.to_vec())
}

/// The reshape dimensions an input asks for, with the first `Rest` resolved.
fn dims(asked: &[Dim], len: u64) -> Vec<u64> {
    let known = asked.iter().try_fold(1u64, |p, d| match *d {
        Dim::Small(v) => p.checked_mul(u64::from(v)),
        Dim::Any(v) => p.checked_mul(v),
        Dim::Rest => Some(p),
    });
    let rest = match known {
        Some(p) if p > 0 && len.is_multiple_of(p) => len / p,
        _ => 0,
    };
    let mut rest = Some(rest);
    asked
        .iter()
        .map(|d| match *d {
            Dim::Small(v) => u64::from(v),
            Dim::Any(v) => v,
            Dim::Rest => rest.take().unwrap_or(1),
        })
        .collect()
}

/// The root layout and the model's verdict on it, or `None` when the input is not one the
/// target checks (too many elements to enumerate).
fn root(root: &Root) -> Option<(Result<Layout, LayoutError>, Geometry)> {
    let (result, g) = match root {
        Root::New {
            itemsize,
            axes,
            offset,
            buffer_len,
        } => {
            let axes = &axes[..axes.len().min(4)];
            let shape: Vec<u64> = axes.iter().map(|&(d, _)| u64::from(d)).collect();
            let strides: Vec<i64> = axes.iter().map(|&(_, s)| i64::from(s)).collect();
            let result = Layout::new(
                u32::from(*itemsize),
                &shape,
                &strides,
                u64::from(*offset),
                u64::from(*buffer_len),
            );
            let g = Geometry {
                itemsize: u32::from(*itemsize),
                shape,
                strides: strides.iter().map(|&s| i128::from(s)).collect(),
                offset: i128::from(*offset),
                buffer_len: u64::from(*buffer_len),
            };
            (result, g)
        }
        Root::Contiguous {
            itemsize,
            shape,
            fortran,
        } => {
            let shape: Vec<u64> = shape.iter().take(5).map(|&d| u64::from(d)).collect();
            let result = Layout::contiguous(u32::from(*itemsize), &shape, order(*fortran));
            // Strides of a packed array, all zero when it is empty; the buffer is its size.
            let mut strides = vec![0i128; shape.len()];
            let mut size = i128::from(*itemsize);
            let axes: Vec<usize> = if *fortran {
                (0..shape.len()).collect()
            } else {
                (0..shape.len()).rev().collect()
            };
            for k in axes {
                strides[k] = size;
                size *= i128::from(shape[k]);
            }
            if shape.contains(&0) {
                strides.fill(0);
            }
            let g = Geometry {
                itemsize: u32::from(*itemsize),
                shape,
                strides,
                offset: 0,
                buffer_len: size as u64,
            };
            (result, g)
        }
    };
    if g.itemsize == 0 {
        assert_eq!(result, Err(LayoutError::ZeroItemsize));
        return None;
    }
    model::enumerable(&g.shape).then_some((result, g))
}

fuzz_target!(|input: Input| {
    let Some((result, want)) = root(&input.root) else {
        return;
    };
    let layout = match (result, want.verdict()) {
        (Ok(l), Ok(_)) => l,
        (Err(e), Err(model)) => {
            assert!(
                model::same_check(&e, &model),
                "Layout::new and the model disagree on the rule: {e:?}, {model:?}"
            );
            return;
        }
        (got, model) => panic!("Layout::new: {got:?}, model: {model:?} for {want:?}"),
    };
    assert_eq!(Geometry::of(&layout), want);
    let memory: Vec<u8> = (0..layout.buffer_len()).map(|i| i as u8).collect();
    let (mut l, mut base) = (layout, 0usize);
    model::check_layout(&l, &memory[base..][..l.buffer_len() as usize]);

    for op in input.ops.iter().take(MAX_OPS) {
        let g = Geometry::of(&l);
        let (got, want, new_base) = match op {
            Op::Slice {
                axis,
                start,
                stop,
                step,
            } => {
                let s = Slice::new(start.map(Int::get), stop.map(Int::get), step.get());
                let axis = usize::from(*axis);
                (l.slice_axis(axis, s), slice_axis(&g, axis, s), base)
            }
            Op::Index { axis, index } => {
                let (axis, index) = (usize::from(*axis), index.get() as u64);
                (l.index_axis(axis, index), index_axis(&g, axis, index), base)
            }
            Op::Permute(axes) => {
                let axes: Vec<usize> = axes.iter().map(|&a| usize::from(a)).collect();
                (l.permute(&axes), permute(&g, &axes), base)
            }
            Op::Transpose => (Ok(l.transpose()), transpose(&g), base),
            Op::Reshape {
                dims: asked,
                fortran,
            } => {
                let dims = dims(asked, l.len());
                let o = order(*fortran);
                (l.reshape(&dims, o), reshape(&g, &dims, o), base)
            }
            Op::Rebase { shift, len } => {
                let (shift, len) = (u64::from(*shift), u64::from(*len));
                // Only a part of the memory this layout's buffer really has.
                if shift + len > l.buffer_len() {
                    continue;
                }
                (
                    l.rebase(shift, len),
                    rebase(&g, shift, len),
                    base + shift as usize,
                )
            }
        };
        let (geometry, pick) = match want {
            Want::Error(e) => {
                assert_eq!(got, Err(e), "{op:?} on {l:?}");
                continue;
            }
            Want::View { geometry, pick } => (geometry, pick),
        };
        let child = match (got, geometry.verdict()) {
            (Ok(child), Ok(_)) => child,
            (Err(e), Err(_)) => {
                assert!(
                    matches!(e.rule(), Some("R20" | "R21" | "R22")),
                    "{op:?} on {l:?}: {e:?}"
                );
                continue;
            }
            (got, model) => panic!("{op:?} on {l:?}: {got:?}, model: {model:?} for {geometry:?}"),
        };
        assert_eq!(Geometry::of(&child), geometry, "{op:?} on {l:?}");
        let buffer = &memory[new_base..][..child.buffer_len() as usize];
        model::check_layout(&child, buffer);
        let parent: Vec<u64> = l.offsets().collect();
        let shift = (new_base - base) as u64;
        let want: Vec<u64> = pick.iter().map(|&p| parent[p] - shift).collect();
        assert_eq!(child.offsets().collect::<Vec<_>>(), want, "{op:?} on {l:?}");
        assert!(child.len() <= MAX_ELEMENTS);
        (l, base) = (child, new_base);
    }
});
