//! Element types with numpy typestr semantics: byte order, kind, itemsize.

use core::fmt;

use crate::DecodeError;

/// The byte order of a dtype, numpy's first typestr character.
///
/// ```
/// use stridemap_core::ByteOrder;
/// assert_eq!(ByteOrder::from_byte(b'>'), Some(ByteOrder::Big));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// `<`: little-endian.
    Little,
    /// `>`: big-endian.
    Big,
    /// `|`: not applicable (one-byte types and `V` records).
    NotApplicable,
}

impl ByteOrder {
    /// The byte order of the machine this code runs on.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "little") {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    };

    /// Parses `<`, `>` or `|`.
    pub const fn from_byte(b: u8) -> Option<ByteOrder> {
        match b {
            b'<' => Some(ByteOrder::Little),
            b'>' => Some(ByteOrder::Big),
            b'|' => Some(ByteOrder::NotApplicable),
            _ => None,
        }
    }

    /// The typestr character: `<`, `>` or `|`.
    pub const fn as_byte(self) -> u8 {
        match self {
            ByteOrder::Little => b'<',
            ByteOrder::Big => b'>',
            ByteOrder::NotApplicable => b'|',
        }
    }
}

/// The kind of a dtype, numpy's second typestr character.
///
/// ```
/// use stridemap_core::Kind;
/// assert_eq!(Kind::from_byte(b'c'), Some(Kind::Complex));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `b`: boolean, one byte.
    Bool,
    /// `i`: signed integer.
    Int,
    /// `u`: unsigned integer.
    Uint,
    /// `f`: IEEE floating point.
    Float,
    /// `c`: complex (two floats).
    Complex,
    /// `V`: opaque record of raw bytes.
    Void,
}

impl Kind {
    /// Parses `b`, `i`, `u`, `f`, `c` or `V`.
    pub const fn from_byte(b: u8) -> Option<Kind> {
        match b {
            b'b' => Some(Kind::Bool),
            b'i' => Some(Kind::Int),
            b'u' => Some(Kind::Uint),
            b'f' => Some(Kind::Float),
            b'c' => Some(Kind::Complex),
            b'V' => Some(Kind::Void),
            _ => None,
        }
    }

    /// The typestr character.
    pub const fn as_byte(self) -> u8 {
        match self {
            Kind::Bool => b'b',
            Kind::Int => b'i',
            Kind::Uint => b'u',
            Kind::Float => b'f',
            Kind::Complex => b'c',
            Kind::Void => b'V',
        }
    }

    /// Whether `itemsize` is allowed for this kind (SPEC rule R9).
    pub const fn allows_itemsize(self, itemsize: u64) -> bool {
        match self {
            Kind::Bool => itemsize == 1,
            Kind::Int | Kind::Uint => matches!(itemsize, 1 | 2 | 4 | 8),
            Kind::Float => matches!(itemsize, 2 | 4 | 8 | 16),
            Kind::Complex => matches!(itemsize, 8 | 16 | 32),
            Kind::Void => itemsize >= 1 && itemsize <= MAX_VOID_ITEMSIZE as u64,
        }
    }
}

/// The largest itemsize of a `V` record (numpy's limit, `i32::MAX`).
pub const MAX_VOID_ITEMSIZE: u32 = i32::MAX as u32;

/// A validated element type: byte order, kind and itemsize, as in numpy's typestr (`<f8`).
///
/// ```
/// use stridemap_core::{DType, Kind};
/// let d = DType::parse("<c16").unwrap();
/// assert_eq!((d.kind(), d.itemsize()), (Kind::Complex, 16));
/// assert_eq!(d.typestr().as_str(), "<c16");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DType {
    byteorder: ByteOrder,
    kind: Kind,
    itemsize: u32,
}

impl DType {
    /// Validates the three raw parts (rules R8, R9, R10, in that order).
    ///
    /// # Errors
    /// [`DecodeError::UnknownKind`] (R8), [`DecodeError::BadItemsize`] (R9),
    /// [`DecodeError::BadByteOrder`] (R10).
    #[inline]
    pub const fn from_raw(byteorder: u8, kind: u8, itemsize: u64) -> Result<DType, DecodeError> {
        let Some(k) = Kind::from_byte(kind) else {
            return Err(DecodeError::UnknownKind { kind });
        };
        if !k.allows_itemsize(itemsize) {
            return Err(DecodeError::BadItemsize { kind, itemsize });
        }
        let needs_bar = itemsize == 1 || matches!(k, Kind::Void);
        let order = match ByteOrder::from_byte(byteorder) {
            Some(ByteOrder::NotApplicable) if needs_bar => Some(ByteOrder::NotApplicable),
            Some(o @ (ByteOrder::Little | ByteOrder::Big)) if !needs_bar => Some(o),
            _ => None,
        };
        match order {
            Some(byteorder) => Ok(DType {
                byteorder,
                kind: k,
                itemsize: itemsize as u32,
            }),
            None => Err(DecodeError::BadByteOrder {
                byteorder,
                kind,
                itemsize: itemsize as u32,
            }),
        }
    }

    /// A dtype in this machine's byte order (`|` where the itemsize is 1 or the kind is `V`).
    ///
    /// ```
    /// use stridemap_core::{DType, Kind};
    /// // `<f8` on x86-64 and (little-endian) ARM, `>f8` on s390x.
    /// let native = if cfg!(target_endian = "little") { "<f8" } else { ">f8" };
    /// assert_eq!(DType::native(Kind::Float, 8).unwrap(), DType::parse(native).unwrap());
    /// ```
    ///
    /// # Errors
    /// Those of [`DType::from_raw`]: [`DecodeError::BadItemsize`] for an itemsize the kind does not
    /// allow (for example `Kind::Float` with 3).
    pub const fn native(kind: Kind, itemsize: u32) -> Result<DType, DecodeError> {
        let order = if itemsize == 1 || matches!(kind, Kind::Void) {
            ByteOrder::NotApplicable
        } else {
            ByteOrder::NATIVE
        };
        DType::from_raw(order.as_byte(), kind.as_byte(), itemsize as u64)
    }

    /// Parses a numpy typestr such as `<f8`, `>i4`, `|b1`, `<c16` or `|V12`.
    ///
    /// The syntax is one byte-order character, one kind character and a decimal itemsize
    /// without sign or leading zero ([`DecodeError::BadTypestr`] otherwise); then the same rules as
    /// [`DType::from_raw`].
    ///
    /// # Errors
    /// [`DecodeError::BadTypestr`] for text that is not a typestr, then those of
    /// [`DType::from_raw`].
    pub fn parse(typestr: &str) -> Result<DType, DecodeError> {
        let b = typestr.as_bytes();
        let (&[order, kind], digits) = b.split_at_checked(2).ok_or(DecodeError::BadTypestr)? else {
            return Err(DecodeError::BadTypestr);
        };
        let itemsize = parse_decimal(digits).ok_or(DecodeError::BadTypestr)?;
        DType::from_raw(order, kind, itemsize)
    }

    /// The byte order.
    pub const fn byteorder(&self) -> ByteOrder {
        self.byteorder
    }

    /// The kind.
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// The size of one element in bytes (at least 1).
    pub const fn itemsize(&self) -> u32 {
        self.itemsize
    }

    /// Whether values of this dtype can be read as native Rust values without swapping bytes.
    pub const fn is_native_order(&self) -> bool {
        matches!(self.byteorder, ByteOrder::NotApplicable)
            || self.byteorder as u8 == ByteOrder::NATIVE as u8
    }

    /// The numpy typestr, e.g. `<f8`.
    pub fn typestr(&self) -> TypeStr {
        // The itemsize's decimal digits, most significant last-filled (a u32 has at most ten).
        let mut digits = [0u8; 10];
        let mut n = self.itemsize;
        let mut count = 0usize;
        for d in digits.iter_mut().rev() {
            *d = b'0'.wrapping_add((n % 10) as u8);
            n /= 10;
            count = count.wrapping_add(1);
            if n == 0 {
                break;
            }
        }
        let digits = digits
            .get(digits.len().wrapping_sub(count)..)
            .unwrap_or_default();
        let head = [self.byteorder.as_byte(), self.kind.as_byte()];
        // Two bytes and at most ten digits fill at most TypeStr::CAPACITY bytes.
        let mut t = TypeStr {
            buf: [0; TypeStr::CAPACITY],
            len: 0,
        };
        for (slot, &b) in t.buf.iter_mut().zip(head.iter().chain(digits)) {
            *slot = b;
            t.len = t.len.wrapping_add(1);
        }
        t
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.typestr().as_str())
    }
}

/// Parses a decimal without sign or leading zero that fits in `u64`.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    match digits {
        [] | [b'0', _, ..] => None,
        _ => digits.iter().try_fold(0u64, |acc, &c| {
            let d = c.checked_sub(b'0').filter(|d| *d <= 9)?;
            acc.checked_mul(10)?.checked_add(u64::from(d))
        }),
    }
}

/// A typestr held inline (no allocation): at most 12 bytes, always ASCII.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeStr {
    buf: [u8; TypeStr::CAPACITY],
    len: usize,
}

impl TypeStr {
    /// The longest typestr: order, kind and ten digits.
    pub const CAPACITY: usize = 12;

    /// The typestr as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into `buf`, so this never fails.
        core::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

impl fmt::Debug for TypeStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TypeStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typestr_round_trips() {
        for s in [
            "<f8",
            ">f8",
            "<f2",
            "<f16",
            "|b1",
            "|i1",
            "|u1",
            "<i2",
            ">u8",
            "<c8",
            ">c32",
            "|V1",
            "|V12",
            "|V2147483647",
        ] {
            assert_eq!(DType::parse(s).unwrap().typestr().as_str(), s, "{s}");
        }
    }

    #[test]
    fn rule_order_is_kind_itemsize_byteorder() {
        assert_eq!(
            DType::parse("<x8"),
            Err(DecodeError::UnknownKind { kind: b'x' })
        );
        assert_eq!(
            DType::parse("?f3"),
            Err(DecodeError::BadItemsize {
                kind: b'f',
                itemsize: 3
            })
        );
        assert!(matches!(
            DType::parse("|f8"),
            Err(DecodeError::BadByteOrder { .. })
        ));
        assert!(matches!(
            DType::parse("<i1"),
            Err(DecodeError::BadByteOrder { .. })
        ));
        assert!(matches!(
            DType::parse("<V4"),
            Err(DecodeError::BadByteOrder { .. })
        ));
        assert!(matches!(
            DType::parse("<b1"),
            Err(DecodeError::BadByteOrder { .. })
        ));
    }

    #[test]
    fn itemsize_limits() {
        assert!(matches!(
            DType::parse("|V0"),
            Err(DecodeError::BadItemsize { itemsize: 0, .. })
        ));
        assert!(matches!(
            DType::from_raw(b'|', b'V', 0),
            Err(DecodeError::BadItemsize { itemsize: 0, .. })
        ));
        assert!(matches!(
            DType::parse("|V2147483648"),
            Err(DecodeError::BadItemsize { .. })
        ));
        assert!(matches!(
            DType::parse("|V99999999999999999999999"),
            Err(DecodeError::BadTypestr)
        ));
    }

    #[test]
    fn bad_syntax() {
        for s in ["", "<", "<f", "<f08", "<f+8", "<f8 ", "é"] {
            assert_eq!(DType::parse(s), Err(DecodeError::BadTypestr), "{s:?}");
        }
    }

    #[test]
    fn native_uses_bar_for_single_bytes() {
        assert_eq!(
            DType::native(Kind::Uint, 1).unwrap().typestr().as_str(),
            "|u1"
        );
        assert_eq!(
            DType::native(Kind::Void, 7).unwrap().typestr().as_str(),
            "|V7"
        );
        assert!(DType::native(Kind::Float, 8).unwrap().is_native_order());
        assert!(!DType::parse(">f8").unwrap().is_native_order() || cfg!(target_endian = "big"));
    }
}
