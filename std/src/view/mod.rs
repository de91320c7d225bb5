//! Strided views with numpy's `as_strided` semantics over a byte buffer: typed ([`View`],
//! [`ViewMut`]) and byte-level ([`ByteView`]).
//!
//! A view is a borrowed buffer plus a [`Layout`] that is proven in bounds, so no index,
//! iteration or sub-view can touch a byte outside the buffer. Sub-views (slices with any step,
//! fixed indices, permutations, reshapes) are new layouts over the same buffer, and any of them
//! can be described again as a descriptor of the same file.

mod bytes;
mod iter;
mod typed;
mod volatile;

pub use bytes::ByteView;
pub use iter::Iter;
pub use typed::{IterMut, View, ViewMut};
pub use volatile::{VolatileIter, VolatileView, VolatileViewMut};

use stridemap_core::{Layout, ValidDescriptor};

use crate::{ViewError, ViewResult as Result};

// `usize` and `u64` have one size and alignment on the only targets this crate builds for
// (a `compile_error!` in lib.rs elsewhere), so a slice of either is a slice of the other.
const _: () = assert!(
    core::mem::size_of::<usize>() == core::mem::size_of::<u64>()
        && core::mem::align_of::<usize>() == core::mem::align_of::<u64>()
);

/// Sizes or indices kept as `u64` (the wire's, a [`Layout`]'s) as the `usize` the API gives.
pub(crate) fn as_usizes(s: &[u64]) -> &[usize] {
    // Cannot fail: same size and alignment (the assertion above), so every length and
    // address fits.
    bytemuck::try_cast_slice(s).unwrap_or_default()
}

/// Indices or sizes the API takes as `usize`, as the `u64` a [`Layout`] takes.
pub(crate) fn as_u64s(s: &[usize]) -> &[u64] {
    // Cannot fail: as in `as_usizes`.
    bytemuck::try_cast_slice(s).unwrap_or_default()
}

/// The descriptor of `layout` inside the buffer `source` describes.
fn describe(source: Option<&ValidDescriptor>, layout: &Layout) -> Result<ValidDescriptor> {
    let source = source.ok_or(ViewError::NotDescribable)?;
    Ok(source.to_builder().layout(layout).build()?)
}

/// The sub-view methods every view type shares: each returns a view of the same buffer with
/// a new layout (checked again).
macro_rules! subviews {
    ($($header:tt)*) => {
        $($header)* {
            /// The layout: shape, strides and offset inside the buffer.
            pub fn layout(&self) -> &Layout {
                &self.layout
            }

            /// Length of each axis (the layout's `u64` lengths, as `usize`: every element
            /// of a view is in memory).
            pub fn shape(&self) -> &[usize] {
                $crate::view::as_usizes(self.layout.shape())
            }

            /// Stride of each axis in bytes.
            pub fn strides(&self) -> &[i64] {
                self.layout.strides()
            }

            /// Number of axes.
            pub fn ndim(&self) -> usize {
                self.layout.ndim()
            }

            /// Number of elements (every element of a view is in memory, so it fits).
            pub fn len(&self) -> usize {
                usize::try_from(self.layout.len()).unwrap_or(usize::MAX)
            }

            /// Whether there are no elements.
            pub fn is_empty(&self) -> bool {
                self.layout.is_empty()
            }

            /// `self[..., start:stop:step, ...]` on `axis` (Python semantics, any step but 0).
            ///
            /// # Errors
            /// A [`ViewError::Layout`] error for a bad axis or a zero step.
            pub fn slice_axis(self, axis: usize, slice: impl Into<stridemap_core::Slice>) -> Result<Self> {
                let l = self.layout.slice_axis(axis, slice.into())?;
                self.with_layout(l)
            }

            /// One slice per axis, numpy's `a[s0, s1, …]` (fewer slices leave the rest whole).
            ///
            /// # Errors
            /// As `slice_axis`.
            pub fn slice(self, slices: &[stridemap_core::Slice]) -> Result<Self> {
                let mut l = self.layout;
                for (axis, &s) in slices.iter().enumerate() {
                    l = l.slice_axis(axis, s)?;
                }
                self.with_layout(l)
            }

            /// `axis` fixed at `index`; the result has one axis fewer.
            ///
            /// # Errors
            /// A [`ViewError::Layout`] error for a bad axis or an index out of range.
            pub fn index_axis(self, axis: usize, index: usize) -> Result<Self> {
                // Lossless on the 64-bit targets this crate builds for.
                let index = u64::try_from(index).unwrap_or(u64::MAX);
                let l = self.layout.index_axis(axis, index)?;
                self.with_layout(l)
            }

            /// The axes reordered: axis `k` of the result is axis `axes[k]` of this view.
            ///
            /// # Errors
            /// A [`ViewError::Layout`] error if `axes` is not a permutation.
            pub fn permute(self, axes: &[usize]) -> Result<Self> {
                let l = self.layout.permute(axes)?;
                self.with_layout(l)
            }

            /// The axes reversed (numpy's `.T`). Strides and offset are kept, so whatever
            /// held for this view (bounds, alignment) holds for the result.
            pub fn t(mut self) -> Self {
                self.layout = self.layout.transpose();
                self
            }

            /// The same elements with a new shape, when the strides allow it without a copy.
            ///
            /// # Errors
            /// A [`ViewError::Layout`] error if the size differs or the strides need a copy.
            pub fn reshape(self, shape: &[usize], order: stridemap_core::Order) -> Result<Self> {
                let l = self.layout.reshape($crate::view::as_u64s(shape), order)?;
                self.with_layout(l)
            }

            /// This view as a descriptor of the same file: opening it gives exactly these
            /// elements (negative strides and transposes included).
            ///
            /// # Errors
            /// [`ViewError::NotDescribable`] for a view not made from a mapping.
            pub fn describe(&self) -> Result<ValidDescriptor> {
                describe(self.source, &self.layout)
            }
        }
    };
}
pub(crate) use subviews;
