//! Byte-level views: any dtype (big-endian, `V` records, unaligned), read explicitly.

use stridemap_core::{DType, Kind, Layout, ValidDescriptor};

use super::{View, describe, subviews};
use crate::{Element, ViewError, ViewResult as Result};

/// A read-only strided view whose elements are read as bytes, for any dtype and alignment.
///
/// ```
/// use stridemap::ByteView;
/// use stridemap::{DType, Layout, Order};
/// // Two big-endian i32 at an odd offset: no typed view could read them in place.
/// let buf = [0u8, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xfe];
/// let v = ByteView::new(&buf, Layout::new(4, &[2], &[4], 1, 9)?, DType::parse(">i4")?)?;
/// assert_eq!(v.read::<i32>(&[0])?, 7);
/// assert_eq!(v.read::<i32>(&[1])?, -2);
/// assert_eq!(v.element(&[0])?, &[0, 0, 0, 7]);
/// # Ok::<(), stridemap::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ByteView<'a> {
    bytes: &'a [u8],
    layout: Layout,
    dtype: DType,
    source: Option<&'a ValidDescriptor>,
}

impl<'a> ByteView<'a> {
    /// A byte view of `layout` over `bytes` (its buffer, at least the bytes its elements
    /// touch) with elements of `dtype`.
    ///
    /// # Errors
    /// [`ViewError::BufferTooShort`], [`ViewError::ItemsizeMismatch`].
    pub fn new(bytes: &'a [u8], layout: Layout, dtype: DType) -> Result<ByteView<'a>> {
        ByteView::with_source(bytes, layout, dtype, None)
    }

    pub(crate) fn with_source(
        bytes: &'a [u8],
        layout: Layout,
        dtype: DType,
        source: Option<&'a ValidDescriptor>,
    ) -> Result<ByteView<'a>> {
        if (bytes.len() as u64) < layout.span().end {
            return Err(ViewError::BufferTooShort {
                needed: layout.span().end,
                len: bytes.len() as u64,
            });
        }
        if layout.itemsize() != dtype.itemsize() {
            return Err(ViewError::ItemsizeMismatch {
                itemsize: layout.itemsize(),
                type_size: dtype.itemsize() as usize,
            });
        }
        Ok(ByteView {
            bytes,
            layout,
            dtype,
            source,
        })
    }

    fn with_layout(self, layout: Layout) -> Result<Self> {
        Ok(ByteView { layout, ..self })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The bytes of the element at `index`.
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error (wrong axis count, index out of range).
    pub fn element(&self, index: &[usize]) -> Result<&'a [u8]> {
        let off = self.layout.element_offset(super::as_u64s(index))?;
        self.at(off).ok_or(ViewError::BufferTooShort {
            needed: off.saturating_add(u64::from(self.dtype.itemsize())),
            len: self.bytes.len() as u64,
        })
    }

    /// The element at `index` as a Rust value, converting the byte order when it differs
    /// from the machine's. The dtype must have `T`'s kind and size (e.g. `>f8` as `f64`).
    ///
    /// # Errors
    /// [`ViewError::DtypeMismatch`]; index errors as for [`ByteView::element`].
    pub fn read<T: Element>(&self, index: &[usize]) -> Result<T> {
        let want = T::dtype()?;
        if want.kind() != self.dtype.kind() || want.itemsize() != self.dtype.itemsize() {
            return Err(ViewError::DtypeMismatch {
                have: self.dtype,
                want,
            });
        }
        let bytes = self.element(index)?;
        let swap = !self.dtype.is_native_order() && self.dtype.kind() != Kind::Void;
        Ok(read_value(bytes, swap))
    }

    /// Every element's bytes in logical C order.
    pub fn elements(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let bytes = self.bytes;
        let n = self.dtype.itemsize() as usize;
        self.layout
            .offsets()
            .filter_map(move |off| bytes.get(off as usize..(off as usize).checked_add(n)?))
    }

    /// The elements' bytes packed in C order (what a contiguous copy holds).
    pub fn to_contiguous(&self) -> Vec<u8> {
        if self.layout.is_c_contiguous() {
            let span = self.layout.span();
            if let Some(s) = self.bytes.get(span.start as usize..span.end as usize) {
                return s.to_vec();
            }
        }
        let mut out = Vec::with_capacity(self.layout.nbytes() as usize);
        self.elements().for_each(|e| out.extend_from_slice(e));
        out
    }

    /// A typed view of the same elements (dtype must match `T` exactly, elements aligned).
    ///
    /// # Errors
    /// [`ViewError::DtypeMismatch`]; alignment errors as for [`View::new`](crate::View::new).
    pub fn typed<T: Element>(&self) -> Result<View<'a, T>> {
        let want = T::dtype()?;
        if want != self.dtype {
            return Err(ViewError::DtypeMismatch {
                have: self.dtype,
                want,
            });
        }
        View::with_source(self.bytes, self.layout, self.source)
    }

    /// The whole enclosing buffer.
    pub fn buffer(&self) -> &'a [u8] {
        self.bytes
    }

    fn at(&self, off: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(off).ok()?;
        self.bytes
            .get(start..start.checked_add(self.dtype.itemsize() as usize)?)
    }
}

subviews!(impl<'a> ByteView<'a>);

/// `T` from its bytes (exactly `size_of::<T>()` of them), reversing them first if `swap`.
fn read_value<T: Element>(bytes: &[u8], swap: bool) -> T {
    let mut value = T::zeroed();
    let dst = bytemuck::bytes_of_mut(&mut value);
    for (d, s) in dst.iter_mut().zip(bytes) {
        *d = *s;
    }
    if swap {
        dst.reverse();
    }
    value
}
