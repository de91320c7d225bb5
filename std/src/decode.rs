//! Descriptor bytes in either form, told apart by their magic.

use stridemap_core::{COMPACT_MAGIC, ValidDescriptor, decode, decode_compact};

use crate::Result;

/// Validates descriptor bytes in either form: the fixed record (SPEC.md §4) or the compact
/// postcard form, told apart by the magic they start with (as the Python reader's `decode`
/// does).
///
/// ```
/// use stridemap::{Builder, DType, decode_any};
/// let d = Builder::new(DType::parse("<f4")?, &[3]).path("/data/a").build()?;
/// assert_eq!(decode_any(&d.to_bytes())?, d);
/// let compact = postcard::to_allocvec(&d.to_compact()).unwrap();
/// assert_eq!(decode_any(&compact)?, d);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Descriptor`](crate::Error::Descriptor), whose [`rule`](crate::Error::rule) names
/// the SPEC rule the bytes break.
pub fn decode_any(bytes: &[u8]) -> Result<ValidDescriptor> {
    if bytes.starts_with(&COMPACT_MAGIC) {
        Ok(decode_compact(bytes)?)
    } else {
        Ok(decode(bytes)?)
    }
}
