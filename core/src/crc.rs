//! CRC-32C (Castagnoli): hardware-accelerated with the `std` feature, portable otherwise.
//!
//! Both paths compute the same function. The `std` one uses `crc-fast`, which picks the
//! fastest instructions of the CPU at run time (PCLMULQDQ/VPCLMULQDQ folding or SSE 4.2 on
//! x86-64, PMULL on ARM) — detection needs the standard library. Without `std`, the `crc`
//! crate's table-driven slice-by-16 runs anywhere.

/// CRC-32C of `bytes`.
#[cfg(feature = "std")]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// CRC-32C of `bytes`.
#[cfg(not(feature = "std"))]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32, crc::Table<16>> =
        crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    CASTAGNOLI.checksum(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        // The CRC-32C check value of "123456789".
        assert_eq!(super::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(super::crc32c(b""), 0);
    }
}
