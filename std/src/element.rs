//! Rust types that typed views can hand out: plain-old-data with a numpy dtype.

use bytemuck::Pod;
use stridemap_core::{DType, Kind};

/// A Rust type whose values are an array element's bytes, in this machine's byte order.
///
/// A typed view of `T` exists only for descriptors whose dtype is exactly `T::dtype()`:
/// same kind, same itemsize, native byte order. Implemented for the integer and float
/// primitives; implement it for your own `#[repr(C)]` `Pod` records with [`Kind::Void`].
///
/// ```
/// use stridemap::Element;
/// assert_eq!(u8::dtype()?.typestr().as_str(), "|u1");
/// assert_eq!(f64::dtype()?.itemsize(), 8);
/// # Ok::<(), stridemap::DecodeError>(())
/// ```
pub trait Element: Pod {
    /// numpy's kind for this type.
    const KIND: Kind;

    /// The dtype whose elements are values of this type (an error for an implementation
    /// whose size its kind does not allow, e.g. a 3-byte float).
    fn dtype() -> Result<DType, stridemap_core::DecodeError> {
        let size = u32::try_from(core::mem::size_of::<Self>()).unwrap_or(0);
        DType::native(Self::KIND, size)
    }
}

macro_rules! element {
    ($($t:ty => $k:ident),* $(,)?) => {
        $(impl Element for $t { const KIND: Kind = Kind::$k; })*
    };
}

element! {
    i8 => Int, i16 => Int, i32 => Int, i64 => Int,
    u8 => Uint, u16 => Uint, u32 => Uint, u64 => Uint,
    f32 => Float, f64 => Float,
}
