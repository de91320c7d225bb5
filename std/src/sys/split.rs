//! Splitting one writer's bytes into pieces allowed disjoint bytes ([`split_ranges`]): the
//! [`Part`]s of a layout cut along one axis, and the element slots of a layout over borrowed
//! memory ([`slots`]).

use stridemap_core::Layout;

use super::VolatileBytesMut;

/// The elements of a layout whose elements never share a byte, cut to the indices `lo..hi`
/// of one axis: the bytes a writer split along that axis may touch ([`split_disjoint`]).
///
/// Made only by [`Part::new`], which checks that no two elements share a byte; the parts
/// of one layout and axis with disjoint index ranges then admit disjoint bytes.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    /// The axes of length 2 or more, outermost (largest |stride|) first.
    axes: Vec<PartAxis>,
    /// Offset of the lowest byte of any element (the layout's span start).
    base: u64,
    itemsize: u64,
    /// The cut axis's indices admitted.
    lo: u64,
    hi: u64,
    /// Nothing is admitted: the layout is empty, or the cut axis has length 1 and its index
    /// 0 is not in `lo..hi`.
    none: bool,
}

#[derive(Clone, Copy, Debug)]
struct PartAxis {
    stride: u64,
    len: u64,
    /// The stride is negative: the index counts down from the lowest address.
    down: bool,
    /// The cut axis.
    cut: bool,
}

impl Part {
    /// The elements of `layout` whose index on `axis` lies in `lo..hi`. `None` if `axis` is
    /// not one, or if two elements of `layout` may share a byte: sorted by |stride|, every
    /// axis must step past all the bytes the axes inside it reach (so each byte belongs to
    /// one element at most, and [`Part::element_end`] finds it by division).
    pub(super) fn new(layout: &Layout, axis: usize, lo: u64, hi: u64) -> Option<Part> {
        let cut_len = *layout.shape().get(axis)?;
        let itemsize = u64::from(layout.itemsize());
        if layout.is_empty() {
            return Some(Part {
                axes: Vec::new(),
                base: 0,
                itemsize,
                lo,
                hi,
                none: true,
            });
        }
        let mut axes: Vec<PartAxis> = layout
            .shape()
            .iter()
            .zip(layout.strides())
            .enumerate()
            .filter(|&(_, (&d, _))| d > 1)
            .map(|(k, (&d, &s))| PartAxis {
                stride: s.unsigned_abs(),
                len: d,
                down: s < 0,
                cut: k == axis,
            })
            .collect();
        axes.sort_unstable_by_key(|a| a.stride);
        let mut reach = itemsize;
        for a in &axes {
            if a.stride < reach || itemsize == 0 {
                return None;
            }
            reach = a.stride.checked_mul(a.len - 1)?.checked_add(reach)?;
        }
        axes.reverse();
        let none = cut_len == 1 && !(lo == 0 && hi >= 1);
        Some(Part {
            axes,
            base: layout.span().start,
            itemsize,
            lo,
            hi,
            none,
        })
    }

    /// The end of the admitted element that holds byte `at`, if one does: the axes from the
    /// outermost, each index the quotient of what is left by its stride (exact, since every
    /// axis steps past all the inner ones reach), the cut axis's index in `lo..hi`, and
    /// what is left inside one element.
    #[inline]
    fn element_end(&self, at: u64) -> Option<u64> {
        if self.none {
            return None;
        }
        let mut rel = at.checked_sub(self.base)?;
        for a in &self.axes {
            let q = rel / a.stride;
            if q >= a.len {
                return None;
            }
            // `q·stride ≤ rel`: no overflow.
            rel -= q * a.stride;
            if a.cut {
                let i = if a.down { a.len - 1 - q } else { q };
                if i < self.lo || i >= self.hi {
                    return None;
                }
            }
        }
        // `rel ≤ at`: the element starts at `at - rel`.
        (rel < self.itemsize).then(|| at - rel + self.itemsize)
    }

    /// Whether every byte of `off .. off + n` lies in an admitted element.
    pub(super) fn covers(&self, off: u64, n: u64) -> bool {
        let Some(end) = off.checked_add(n) else {
            return false;
        };
        let mut at = off;
        while at < end {
            match self.element_end(at) {
                Some(e) => at = e,
                None => return false,
            }
        }
        true
    }
}

/// The byte range of `layout`'s elements in a handle's range, empty for no elements.
fn span_of(layout: &Layout) -> std::ops::Range<usize> {
    let s = layout.span();
    let start = usize::try_from(s.start).unwrap_or(usize::MAX);
    let end = usize::try_from(s.end).unwrap_or(usize::MAX);
    if layout.is_empty() {
        start..start
    } else {
        start..end.max(start)
    }
}

/// Splits a writer of the elements of `layout` along `axis` at index `at`: writers of the
/// indices before `at` and of those from it on, with their layouts ([`split_ranges`]).
pub(crate) fn split_disjoint<'a>(
    bytes: VolatileBytesMut<'a>,
    layout: &Layout,
    axis: usize,
    at: u64,
) -> Option<(VolatileBytesMut<'a>, Layout, VolatileBytesMut<'a>, Layout)> {
    let len = *layout.shape().get(axis)?;
    let mut halves = split_ranges(bytes, layout, axis, &[0, at.min(len), len])?.into_iter();
    let (ha, a) = halves.next()?;
    let (hb, b) = halves.next()?;
    Some((ha, a, hb, b))
}

/// Splits a writer of the elements of `layout` along `axis` into writers of the indices
/// `bounds[k] .. bounds[k + 1]`, with their layouts; `bounds` must not decrease and must end
/// at or below the axis's length. Either the pieces' spans do not meet, and each handle is
/// narrowed to its piece's span (no cost per access), or they interleave, and each handle
/// gets a [`Part`] of `layout` (a division per axis per access). `None` if pieces interleave
/// and elements of `layout` may share bytes, or `axis` or `bounds` is wrong.
pub(crate) fn split_ranges<'a>(
    bytes: VolatileBytesMut<'a>,
    layout: &Layout,
    axis: usize,
    bounds: &[u64],
) -> Option<Vec<(VolatileBytesMut<'a>, Layout)>> {
    let len = *layout.shape().get(axis)?;
    if bounds.windows(2).any(|w| w[0] > w[1]) || bounds.last().is_some_and(|&b| b > len) {
        return None;
    }
    let ranges: Vec<(u64, u64)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let mut pieces = Vec::with_capacity(ranges.len());
    for &(lo, hi) in &ranges {
        let l = layout
            .slice_axis(
                axis,
                stridemap_core::Slice::range(i64::try_from(lo).ok()?, i64::try_from(hi).ok()?),
            )
            .ok()?;
        pieces.push(l);
    }
    let VolatileBytesMut {
        ptr,
        len: n,
        lo,
        hi,
        parts,
        ..
    } = bytes;
    // The pieces' windows inside `lo..hi`, in order of address, the empty ones left out
    // (they allow no byte).
    let windows: Vec<(usize, usize)> = pieces
        .iter()
        .map(|l| {
            let w = span_of(l);
            (w.start.max(lo), w.end.min(hi))
        })
        .collect();
    let mut sorted: Vec<(usize, usize)> = windows.iter().copied().filter(|w| w.0 < w.1).collect();
    sorted.sort_unstable();
    let apart = sorted.windows(2).all(|w| w[0].1 <= w[1].0);
    let mut bounds_and_parts = Vec::with_capacity(ranges.len());
    for (&(a, b), &w) in ranges.iter().zip(&windows) {
        if apart {
            bounds_and_parts.push((w, parts.clone()));
        } else {
            let mut p = parts.clone();
            p.push(Part::new(layout, axis, a, b)?);
            bounds_and_parts.push(((lo, hi), p));
        }
    }
    drop(parts);
    let mut out = Vec::with_capacity(pieces.len());
    for (((wlo, whi), p), l) in bounds_and_parts.into_iter().zip(pieces) {
        // SAFETY: every handle covers `bytes`'s range, readable and writable for 'a with no
        // reference in use (its invariant; `bytes` is consumed). Not a premise, but what the
        // split promises: each is allowed only bytes `bytes` was (its window inside
        // `lo..hi`, all of its parts kept), and any two disjoint ones: either all the non-empty
        // windows are apart (sorted and compared just above; an empty window allows no byte),
        // or each handle's last part is a `Part` of `layout` and `axis` for its own index
        // range `bounds[k]..bounds[k + 1]`, and these ranges are disjoint (`bounds` checked
        // not to decrease), while a part admits a byte only inside the one element holding
        // it (`Part::element_end`; `Part::new` checked that no two elements share a byte)
        // when that element's index is in its range. Neither rests on the
        // sub-layouts `pieces` (core's slicing): a wrong one could only make its view's
        // accesses fail.
        let h = unsafe { VolatileBytesMut::with_bounds(ptr, n, wlo, whi, p) };
        out.push((h, l));
    }
    Some(out)
}

/// A layout's elements as slots of a `[T]` of `len` elements, computed and checked here from
/// the layout's raw fields (shape, byte strides, byte offset) with checked arithmetic, so
/// that the views below rest on this module's checks, not on the layout's own methods.
#[derive(Debug)]
pub(super) struct Slots {
    /// Per axis: length, and stride in slots (0 for axes of length 0 or 1, which never move).
    pub(super) axes: Vec<(usize, isize)>,
    /// The slot of element `[0, …, 0]`.
    pub(super) first: usize,
    /// The lowest and highest slot any element occupies (both `first` when there are none).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) lowest: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) highest: usize,
    /// The number of elements.
    pub(super) count: usize,
}

/// `layout`'s elements as slots of a `[T]` of `len` elements of `size` bytes: `None` unless
/// every offset is a whole number of slots, and every element's slot is below `len` (for no
/// elements, `first ≤ len`). Every element's slot is `first + Σ iₖ·strideₖ`, between
/// `lowest = first + Σ min(0, (dₖ−1)·strideₖ)` and `highest = first + Σ max(0, …)`.
pub(super) fn slots(layout: &Layout, size: usize, len: usize) -> Option<Slots> {
    if size == 0 || layout.shape().len() != layout.strides().len() {
        return None;
    }
    let size_i = i128::try_from(size).ok()?;
    let offset = i128::from(layout.offset());
    if offset % size_i != 0 {
        return None;
    }
    let first = offset / size_i;
    // No element is reached when an axis is empty: then every stride is taken as 0.
    let empty = layout.shape().contains(&0);
    let (mut lowest, mut highest, mut count) = (first, first, 1usize);
    let mut axes = Vec::with_capacity(layout.shape().len());
    for (&d, &s) in layout.shape().iter().zip(layout.strides()) {
        let d = usize::try_from(d).ok()?;
        count = count.checked_mul(d)?;
        let s = if d > 1 && !empty { i128::from(s) } else { 0 };
        if s % size_i != 0 {
            return None;
        }
        let s = s / size_i;
        let reach = s.checked_mul(i128::try_from(d.saturating_sub(1)).ok()?)?;
        if reach < 0 {
            lowest = lowest.checked_add(reach)?;
        } else {
            highest = highest.checked_add(reach)?;
        }
        axes.push((d, isize::try_from(s).ok()?));
    }
    let len = i128::try_from(len).ok()?;
    let inside = if count == 0 {
        (lowest, highest) = (first, first);
        0 <= first && first <= len
    } else {
        0 <= lowest && highest < len
    };
    inside.then_some(())?;
    Some(Slots {
        axes,
        first: usize::try_from(first).ok()?,
        lowest: usize::try_from(lowest).ok()?,
        highest: usize::try_from(highest).ok()?,
        count,
    })
}

impl Slots {
    /// Whether no two elements share a slot: sorted by |stride|, every axis of length 2 or
    /// more steps past all the slots the axes inside it reach (so `Σ iₖ·strideₖ` is one to
    /// one). Conservative: some layouts of distinct elements are refused.
    pub(super) fn distinct(&self) -> bool {
        if self.count == 0 {
            return true;
        }
        let mut axes: Vec<(usize, usize)> = self
            .axes
            .iter()
            .filter(|&&(d, _)| d > 1)
            .map(|&(d, s)| (d, s.unsigned_abs()))
            .collect();
        axes.sort_unstable_by_key(|&(_, s)| s);
        let mut reach = 1usize;
        for (d, s) in axes {
            if s < reach {
                return false;
            }
            let Some(r) = s.checked_mul(d - 1).and_then(|r| r.checked_add(reach)) else {
                return false;
            };
            reach = r;
        }
        true
    }
}
