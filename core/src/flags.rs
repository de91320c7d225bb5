//! The small enums packed into the record's `flags` word: order, mode and source kind.

use core::fmt;
use core::str::FromStr;

use crate::{DecodeError, ParseNameError};

/// The memory order the producer declares (flags bit 0).
///
/// It is informational: element positions come from the strides alone, never from the order
/// (joblib's reducer takes the order from the backing file and scrambles transposed views).
///
/// ```
/// use stridemap_core::Order;
/// assert_eq!("F".parse::<Order>().unwrap(), Order::F);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Order {
    /// Row-major: the last axis varies fastest.
    #[default]
    C,
    /// Column-major: the first axis varies fastest.
    F,
}

impl Order {
    /// `"C"` or `"F"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Order::C => "C",
            Order::F => "F",
        }
    }
}

impl FromStr for Order {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Order, ParseNameError> {
        match s {
            "C" | "c" => Ok(Order::C),
            "F" | "f" => Ok(Order::F),
            _ => Err(ParseNameError {
                what: "order",
                expected: "C, F",
            }),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the file may be mapped (flags bits 1–2), numpy's memmap modes.
///
/// `w+` is accepted when parsing and means [`Mode::ReadWrite`]: stridemap never creates,
/// truncates or grows a file, so "create or overwrite" can only mean "write in place".
///
/// ```
/// use stridemap_core::Mode;
/// assert_eq!("w+".parse::<Mode>().unwrap(), Mode::ReadWrite);
/// assert_eq!(Mode::ReadOnly.grant(Mode::ReadWrite), None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Mode {
    /// `r`: shared, read-only.
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "r"))]
    ReadOnly,
    /// `r+`: shared, read-write; a consumer's writes reach the producer.
    #[cfg_attr(feature = "serde", serde(rename = "r+"))]
    ReadWrite,
    /// `c`: private copy-on-write; writes stay in the writer's process.
    #[cfg_attr(feature = "serde", serde(rename = "c"))]
    CopyOnWrite,
}

impl Mode {
    /// The two-bit code stored in the flags (0 = `r`, 1 = `r+`, 2 = `c`).
    pub const fn code(self) -> u32 {
        match self {
            Mode::ReadOnly => 0,
            Mode::ReadWrite => 1,
            Mode::CopyOnWrite => 2,
        }
    }

    /// The mode for a two-bit code; 3 is [`DecodeError::BadMode`] (rule R6).
    ///
    /// # Errors
    /// [`DecodeError::BadMode`] for code 3 or more (R6).
    #[inline]
    pub const fn from_code(code: u32) -> Result<Mode, DecodeError> {
        match code {
            0 => Ok(Mode::ReadOnly),
            1 => Ok(Mode::ReadWrite),
            2 => Ok(Mode::CopyOnWrite),
            _ => Err(DecodeError::BadMode { code: code as u8 }),
        }
    }

    /// numpy's name: `"r"`, `"r+"` or `"c"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::ReadOnly => "r",
            Mode::ReadWrite => "r+",
            Mode::CopyOnWrite => "c",
        }
    }

    /// Whether a mapping in this mode can be written through.
    pub const fn is_writable(self) -> bool {
        !matches!(self, Mode::ReadOnly)
    }

    /// Whether a consumer that asks for `wanted` may have it when the descriptor says `self`.
    ///
    /// A consumer may always ask for less: `r` is always granted, `c` by any descriptor (its
    /// writes stay in its own process), `r+` only by an `r+` descriptor.
    pub const fn grant(self, wanted: Mode) -> Option<Mode> {
        match (self, wanted) {
            (Mode::ReadWrite, Mode::ReadWrite) => Some(Mode::ReadWrite),
            (_, Mode::ReadWrite) => None,
            (_, granted) => Some(granted),
        }
    }
}

impl FromStr for Mode {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Mode, ParseNameError> {
        match s {
            "r" => Ok(Mode::ReadOnly),
            "r+" | "w+" => Ok(Mode::ReadWrite),
            "c" => Ok(Mode::CopyOnWrite),
            _ => Err(ParseNameError {
                what: "mode",
                expected: "r, r+, c",
            }),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the consumer gets the file from (flags bit 3).
///
/// ```
/// use stridemap_core::Source;
/// assert_ne!(Source::Path, Source::Fd);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Source {
    /// The record's path names the file.
    #[default]
    Path,
    /// The file descriptor travels beside the message (SCM_RIGHTS); the path is empty.
    Fd,
}

/// Bit positions inside the `flags` word.
pub(crate) mod bits {
    pub(crate) const ORDER_F: u32 = 1 << 0;
    pub(crate) const MODE_SHIFT: u32 = 1;
    pub(crate) const MODE_MASK: u32 = 0b11 << MODE_SHIFT;
    pub(crate) const SOURCE_FD: u32 = 1 << 3;
    /// Every bit version 1.0 defines.
    pub(crate) const KNOWN: u32 = ORDER_F | MODE_MASK | SOURCE_FD;
}

/// Packs the three enums into a flags word.
pub(crate) const fn pack(order: Order, mode: Mode, source: Source) -> u32 {
    let mut f = mode.code() << bits::MODE_SHIFT;
    if matches!(order, Order::F) {
        f |= bits::ORDER_F;
    }
    if matches!(source, Source::Fd) {
        f |= bits::SOURCE_FD;
    }
    f
}

/// Unpacks a flags word (rule R5 when `strict`, then R6).
#[inline]
pub(crate) const fn unpack(flags: u32, strict: bool) -> Result<(Order, Mode, Source), DecodeError> {
    if strict && flags & !bits::KNOWN != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }
    let mode = match Mode::from_code((flags & bits::MODE_MASK) >> bits::MODE_SHIFT) {
        Ok(m) => m,
        Err(e) => return Err(e),
    };
    let order = if flags & bits::ORDER_F != 0 {
        Order::F
    } else {
        Order::C
    };
    let source = if flags & bits::SOURCE_FD != 0 {
        Source::Fd
    } else {
        Source::Path
    };
    Ok((order, mode, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack() {
        for order in [Order::C, Order::F] {
            for mode in [Mode::ReadOnly, Mode::ReadWrite, Mode::CopyOnWrite] {
                for source in [Source::Path, Source::Fd] {
                    let f = pack(order, mode, source);
                    assert_eq!(unpack(f, true), Ok((order, mode, source)));
                }
            }
        }
        assert_eq!(unpack(0b110, true), Err(DecodeError::BadMode { code: 3 }));
        assert_eq!(
            unpack(1 << 4, true),
            Err(DecodeError::UnknownFlags { flags: 1 << 4 })
        );
        assert_eq!(
            unpack(1 << 4, false),
            Ok((Order::C, Mode::ReadOnly, Source::Path))
        );
    }

    #[test]
    fn consumer_gets_at_most_what_the_descriptor_allows() {
        use Mode::*;
        assert_eq!(ReadOnly.grant(ReadWrite), None);
        assert_eq!(CopyOnWrite.grant(ReadWrite), None);
        assert_eq!(ReadWrite.grant(ReadWrite), Some(ReadWrite));
        assert_eq!(ReadWrite.grant(ReadOnly), Some(ReadOnly));
        assert_eq!(ReadOnly.grant(CopyOnWrite), Some(CopyOnWrite));
        assert_eq!("w+".parse::<Mode>(), Ok(ReadWrite));
        assert_eq!(
            "x".parse::<Mode>(),
            Err(ParseNameError {
                what: "mode",
                expected: "r, r+, c"
            })
        );
    }
}
