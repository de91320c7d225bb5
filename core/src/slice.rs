//! Python slice semantics (`start:stop:step`) for one axis.

use crate::LayoutError;

/// A Python/numpy slice of one axis: `start:stop:step`, any step but zero, negative indices
/// counted from the end, out-of-range bounds clamped.
///
/// ```
/// use stridemap_core::Slice;
/// // m[500:490:-1] on an axis of 1000 elements: 10 elements, starting at 500.
/// assert_eq!(Slice::new(Some(500), Some(490), -1).indices(1000), Ok((500, 10)));
/// assert_eq!(Slice::REVERSED.indices(4), Ok((3, 4)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slice {
    /// First index, `None` for the natural start (0, or the end when stepping backwards).
    pub start: Option<i64>,
    /// One past the last index, `None` for the natural end.
    pub stop: Option<i64>,
    /// Step; negative walks backwards; zero is an error.
    pub step: i64,
}

impl Slice {
    /// `::`, the whole axis.
    pub const FULL: Slice = Slice::new(None, None, 1);
    /// `::-1`, the whole axis reversed.
    pub const REVERSED: Slice = Slice::new(None, None, -1);

    /// `start:stop:step`.
    pub const fn new(start: Option<i64>, stop: Option<i64>, step: i64) -> Slice {
        Slice { start, stop, step }
    }

    /// `start:stop`.
    pub const fn range(start: i64, stop: i64) -> Slice {
        Slice::new(Some(start), Some(stop), 1)
    }

    /// `start:stop` from positions counted from the front as `usize`, as a view's indices and
    /// lengths are: [`Slice::range`] without a cast. A position above `i64::MAX` (past the
    /// end of any axis) is taken as `i64::MAX`, which selects the same elements, since
    /// bounds past the end are clamped.
    ///
    /// ```
    /// use stridemap_core::Slice;
    /// let (lo, hi): (usize, usize) = (2, 5);
    /// assert_eq!(Slice::between(lo, hi), Slice::range(2, 5));
    /// assert_eq!(Slice::between(3, usize::MAX).indices(10), Ok((3, 7)));
    /// ```
    pub fn between(start: usize, stop: usize) -> Slice {
        let position = |i: usize| i64::try_from(i).unwrap_or(i64::MAX);
        Slice::range(position(start), position(stop))
    }

    /// `::step`.
    pub const fn step(step: i64) -> Slice {
        Slice::new(None, None, step)
    }

    /// The first selected index and the number of selected elements on an axis of `len`,
    /// exactly as Python's `slice.indices` and `len(range(...))` compute them.
    ///
    /// When nothing is selected the first index is meaningless and returned as 0.
    ///
    /// # Errors
    /// [`LayoutError::ZeroStep`] for a step of 0.
    pub fn indices(&self, len: u64) -> Result<(u64, u64), LayoutError> {
        if self.step == 0 {
            return Err(LayoutError::ZeroStep);
        }
        // i128 holds every intermediate value: |index| < 2^63 and len < 2^64 (so the
        // saturating operations below never saturate, and step is not 0).
        let len = i128::from(len);
        let step = i128::from(self.step);
        let resolve = |v: Option<i64>, default: i128, lo: i128, hi: i128| match v {
            None => default,
            Some(v) => {
                let v = i128::from(v);
                let v = if v < 0 { v.saturating_add(len) } else { v };
                v.clamp(lo, hi)
            }
        };
        let (start, stop) = if step > 0 {
            (
                resolve(self.start, 0, 0, len),
                resolve(self.stop, len, 0, len),
            )
        } else {
            (
                resolve(self.start, len.saturating_sub(1), -1, len.saturating_sub(1)),
                resolve(self.stop, -1, -1, len.saturating_sub(1)),
            )
        };
        let count = if step > 0 && stop > start {
            stop.saturating_sub(start)
                .saturating_sub(1)
                .checked_div(step)
                .ok_or(LayoutError::ZeroStep)?
                .saturating_add(1)
        } else if step < 0 && start > stop {
            start
                .saturating_sub(stop)
                .saturating_sub(1)
                .checked_div(step.saturating_neg())
                .ok_or(LayoutError::ZeroStep)?
                .saturating_add(1)
        } else {
            0
        };
        if count == 0 {
            return Ok((0, 0));
        }
        // 0 <= start < len and 0 < count <= len, so both fit in u64.
        Ok((start as u64, count as u64))
    }
}

impl From<core::ops::Range<i64>> for Slice {
    fn from(r: core::ops::Range<i64>) -> Slice {
        Slice::range(r.start, r.end)
    }
}

impl From<core::ops::RangeFull> for Slice {
    fn from(_: core::ops::RangeFull) -> Slice {
        Slice::FULL
    }
}

impl From<core::ops::RangeFrom<i64>> for Slice {
    fn from(r: core::ops::RangeFrom<i64>) -> Slice {
        Slice::new(Some(r.start), None, 1)
    }
}

impl From<core::ops::RangeTo<i64>> for Slice {
    fn from(r: core::ops::RangeTo<i64>) -> Slice {
        Slice::new(None, Some(r.end), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Python's semantics, written the long way: walk the indices.
    fn model(s: Slice, len: u64) -> (u64, u64) {
        let len = len as i128;
        let norm = |v: i64| {
            let v = v as i128;
            if v < 0 { v + len } else { v }
        };
        let step = s.step as i128;
        let mut i = match s.start {
            None if step > 0 => 0,
            None => len - 1,
            Some(v) => norm(v),
        };
        let stop = match s.stop {
            None if step > 0 => len,
            None => -1,
            Some(v) => norm(v),
        };
        if step > 0 {
            i = i.max(0);
        } else {
            i = i.min(len - 1);
        }
        let mut first = None;
        let mut n = 0u64;
        while (step > 0 && i < stop.min(len)) || (step < 0 && i > stop.max(-1)) {
            if first.is_none() {
                first = Some(i as u64);
            }
            n += 1;
            i += step;
            if n > 10_000 {
                break;
            }
        }
        (first.unwrap_or(0), n)
    }

    #[test]
    fn python_examples() {
        let s = |a, b, c| Slice::new(a, b, c);
        assert_eq!(s(Some(500), Some(490), -1).indices(1000), Ok((500, 10)));
        assert_eq!(s(None, None, -3).indices(10), Ok((9, 4)));
        assert_eq!(s(Some(-3), None, 1).indices(10), Ok((7, 3)));
        assert_eq!(s(Some(-30), Some(30), 1).indices(10), Ok((0, 10)));
        assert_eq!(s(Some(5), Some(2), 1).indices(10), Ok((0, 0)));
        assert_eq!(s(None, None, -1).indices(0), Ok((0, 0)));
        assert_eq!(s(None, None, i64::MIN).indices(10), Ok((9, 1)));
        assert_eq!(s(None, None, i64::MAX).indices(u64::MAX), Ok((0, 3)));
        assert_eq!(s(None, None, 0).indices(3), Err(LayoutError::ZeroStep));
    }

    #[test]
    fn between_is_range_of_positions() {
        assert_eq!(Slice::between(2, 5), Slice::range(2, 5));
        let past = Slice::between(usize::MAX - 1, usize::MAX);
        assert_eq!(past, Slice::range(i64::MAX, i64::MAX));
        assert_eq!(past.indices(u64::MAX), Ok((0, 0)));
        assert_eq!(Slice::between(0, usize::MAX).indices(7), Ok((0, 7)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 16 } else { 1000 }))]

        #[test]
        fn agrees_with_walking(len in 0u64..40, start in prop::option::of(-50i64..50),
                               stop in prop::option::of(-50i64..50),
                               step in prop_oneof![-7i64..0, 1i64..8]) {
            let s = Slice::new(start, stop, step);
            prop_assert_eq!(s.indices(len).unwrap(), model(s, len));
        }
    }
}
