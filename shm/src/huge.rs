//! Huge pages for new segments: what the system offers (free hugetlb pages, transparent huge
//! pages for shared memory, temp roots mounted with `huge=`), which mechanism a new segment
//! gets, and how much of a mapping the kernel really maps with huge pages.
//!
//! A fresh segment costs one page fault (and one page zeroed) per 4 KiB, for the producer that
//! fills it and again for every consumer that maps it. With 2 MiB pages both costs drop to one
//! per 2 MiB. [`PoolConfig::huge_pages`](crate::PoolConfig::huge_pages) chooses, per new
//! segment of at least one huge page, the first of these that is available:
//!
//! | pool kind | mechanism | available when |
//! |---|---|---|
//! | memfd | [`PageBacking::HugetlbMemfd`] | enough free hugetlb pages (`vm.nr_hugepages`) |
//! | memfd | [`PageBacking::ThpMemfd`] | `shmem_enabled` is `advise`, `within_size`, `always` or `force` |
//! | file | [`PageBacking::HugetlbFile`] | the temp root is a `hugetlbfs` mount with enough free pages |
//! | file | [`PageBacking::ThpFile`] | the temp root is a tmpfs mounted `huge=within_size`, `always` or `advise` (or `shmem_enabled` is `force`) |
//!
//! The kind of a pool is never changed behind its back (named files and memfds reach
//! consumers differently). Huge segments keep their data at the huge page size (2 MiB) into
//! the file, so that every consumer maps it aligned, and their capacities are whole huge
//! pages.
//!
//! ```
//! use stridemap_shm::{HugePages, SegmentKind, huge_probe};
//! let probe = huge_probe(SegmentKind::Memfd, None, 64 << 20);
//! // Which mechanism a 64 MiB memfd segment would get here, or why none:
//! println!("{}", probe.summary());
//! assert!(probe.page_size >= 4096);
//! # let _ = HugePages::Auto;
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use stridemap_core::SEGMENT_DATA_OFFSET;

use crate::SegmentKind;

/// Whether a pool's new segments use huge pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HugePages {
    /// Huge pages for segments of at least one huge page (2 MiB) when the system offers a
    /// mechanism for the pool's kind; base pages otherwise, with a debug log line saying why.
    #[default]
    Auto,
    /// Always base (4 KiB) pages.
    Never,
    /// Every new segment in huge pages; creating one fails with
    /// [`Error::HugePagesUnavailable`](crate::Error::HugePagesUnavailable), naming what to
    /// enable, when the system offers none.
    Require,
}

impl HugePages {
    /// Parses `auto`, `never` or `require` (as the Python option and the CLI spell them).
    ///
    /// ```
    /// use stridemap_shm::HugePages;
    /// assert_eq!(HugePages::parse("require"), Some(HugePages::Require));
    /// assert_eq!(HugePages::parse("sometimes"), None);
    /// ```
    pub fn parse(s: &str) -> Option<HugePages> {
        match s {
            "auto" => Some(HugePages::Auto),
            "never" => Some(HugePages::Never),
            "require" => Some(HugePages::Require),
            _ => None,
        }
    }
}

/// What backs a segment's memory.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageBacking {
    /// Base pages (4 KiB on x86-64).
    Base,
    /// A memfd made with `MFD_HUGETLB`: hugetlb pages, reserved when the segment is created.
    HugetlbMemfd,
    /// A named file in a `hugetlbfs` temp root.
    HugetlbFile,
    /// A memfd with transparent huge pages (`madvise(MADV_HUGEPAGE)` on its mapping).
    ThpMemfd,
    /// A named file in a tmpfs temp root mounted with `huge=`.
    ThpFile,
}

impl PageBacking {
    /// Whether this is a huge-page mechanism.
    pub fn is_huge(self) -> bool {
        self != PageBacking::Base
    }

    /// Whether the pages come from the hugetlb pool (reserved up front, never split).
    pub fn is_hugetlb(self) -> bool {
        matches!(self, PageBacking::HugetlbMemfd | PageBacking::HugetlbFile)
    }
}

impl fmt::Display for PageBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageBacking::Base => "base pages",
            PageBacking::HugetlbMemfd => "hugetlb memfd (MFD_HUGETLB)",
            PageBacking::HugetlbFile => "hugetlbfs file",
            PageBacking::ThpMemfd => "memfd with transparent huge pages",
            PageBacking::ThpFile => "tmpfs file with transparent huge pages (huge=)",
        })
    }
}

/// One mechanism considered for a new segment: whether it is available, and the facts that
/// decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The mechanism.
    pub backing: PageBacking,
    /// Whether a new segment can use it now.
    pub available: bool,
    /// Why (or why not), and what to enable when not.
    pub detail: String,
    /// transparent huge pages only: `madvise(MADV_HUGEPAGE)` is what makes the kernel use
    /// them (mode `advise`), so the space is reserved by prefaulting the advised mapping
    /// rather than with `fallocate`, which has no mapping to consult.
    pub(crate) advise_only: bool,
}

/// What the system offers a new segment of a pool's kind (and, for named files, temp root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HugeProbe {
    /// The huge page size used (the PMD size, 2 MiB on x86-64), or 4096 where there is none.
    pub page_size: u64,
    /// The mechanisms in the order they are tried.
    pub candidates: Vec<Candidate>,
}

impl HugeProbe {
    /// The first available mechanism.
    pub fn chosen(&self) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.available)
    }

    /// One line: the mechanism chosen and why the ones before it were not, or why none is.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for c in &self.candidates {
            if c.available {
                parts.push(format!("using {} ({})", c.backing, c.detail));
                break;
            }
            parts.push(format!("not {}: {}", c.backing, c.detail));
        }
        if self.candidates.is_empty() {
            parts.push("no huge page mechanism applies".into());
        }
        parts.join("; ")
    }
}

/// How a new segment is made: its mechanism, and the page size its data is aligned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) backing: PageBacking,
    /// The huge page size (unused for base pages).
    pub(crate) page_size: u64,
    /// See [`Candidate::advise_only`].
    pub(crate) advise_only: bool,
}

impl Plan {
    /// Base pages, the data at [`SEGMENT_DATA_OFFSET`].
    pub(crate) const BASE: Plan = Plan {
        backing: PageBacking::Base,
        page_size: 4096,
        advise_only: false,
    };

    /// The plan for an available candidate of `probe`.
    pub(crate) fn of(c: &Candidate, probe: &HugeProbe) -> Plan {
        Plan {
            backing: c.backing,
            page_size: probe.page_size,
            advise_only: c.advise_only,
        }
    }

    /// Where the data starts: a page of its own for the header, a huge page for huge segments.
    pub(crate) fn data_offset(&self) -> u64 {
        if self.backing.is_huge() {
            self.page_size
        } else {
            SEGMENT_DATA_OFFSET
        }
    }

    /// Whether the mechanism is transparent huge pages.
    pub(crate) fn is_thp(&self) -> bool {
        matches!(self.backing, PageBacking::ThpMemfd | PageBacking::ThpFile)
    }
}

const THP: &str = "/sys/kernel/mm/transparent_hugepage";
const HUGETLB: &str = "/sys/kernel/mm/hugepages";

/// The PMD (huge page) size, 2 MiB on x86-64; `None` without transparent huge pages.
pub(crate) fn pmd_size() -> Option<u64> {
    read_trim(&format!("{THP}/hpage_pmd_size"))?
        .parse()
        .ok()
        .filter(|&s: &u64| s.is_power_of_two() && s > 4096)
}

/// The huge page size segments use: the PMD size, else the default hugetlb size, else 2 MiB.
pub(crate) fn huge_page_size() -> u64 {
    pmd_size()
        .or_else(|| meminfo("Hugepagesize:").map(|kb| kb << 10))
        .filter(|s| s.is_power_of_two() && *s > 4096)
        .unwrap_or(2 << 20)
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A `/proc/meminfo` value (kB, or a count).
fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The selected value of a sysfs choice file such as `always within_size [advise] never`.
pub(crate) fn selected(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = start + text.get(start..)?.find(']')?;
    text.get(start + 1..end)
}

/// Free hugetlb pages of `size` bytes not promised to anyone yet (free − reserved).
pub(crate) fn hugetlb_available(size: u64) -> Option<u64> {
    let dir = format!("{HUGETLB}/hugepages-{}kB", size >> 10);
    let sysfs = |f: &str| read_trim(&format!("{dir}/{f}")).and_then(|s| s.parse::<u64>().ok());
    if let (Some(free), Some(resv)) = (sysfs("free_hugepages"), sysfs("resv_hugepages")) {
        return Some(free.saturating_sub(resv));
    }
    if meminfo("Hugepagesize:")? << 10 == size {
        let free = meminfo("HugePages_Free:")?;
        let resv = meminfo("HugePages_Rsvd:").unwrap_or(0);
        return Some(free.saturating_sub(resv));
    }
    None
}

/// The global `shmem_enabled` mode (memfds and the internal shmem mount follow it).
pub(crate) fn shmem_mode() -> Option<String> {
    let text = read_trim(&format!("{THP}/shmem_enabled"))?;
    selected(&text).map(str::to_string)
}

/// The mount holding `path`, from `/proc/self/mountinfo`: (mount point, fs type, super
/// options). The file is read as bytes: a mount point anywhere on the system may have a name
/// that is not UTF-8 (any user can make one with FUSE), and that must not hide the others.
pub(crate) fn mount_of(path: &Path) -> Option<(PathBuf, String, String)> {
    use std::os::unix::ffi::OsStringExt;
    let path = path.canonicalize().ok()?;
    let text = std::fs::read("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, String, String)> = None;
    for line in text.split(|&b| b == b'\n') {
        let Some(sep) = line.windows(3).position(|w| w == b" - ") else {
            continue;
        };
        let (left, right) = (&line[..sep], &line[sep + 3..]);
        let Some(point) = left.split(|&b| b == b' ').nth(4).map(unescape) else {
            continue;
        };
        let mut r = right.split(|&b| b == b' ');
        let (Some(fstype), Some(_source), Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let point = PathBuf::from(std::ffi::OsString::from_vec(point));
        // Later lines shadow earlier ones on the same mount point, so `>=`.
        if path.starts_with(&point)
            && best
                .as_ref()
                .is_none_or(|(b, _, _)| point.components().count() >= b.components().count())
        {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            best = Some((point, text(fstype), text(opts)));
        }
    }
    best
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(d) = b.get(i + 1..i + 4)
            && d.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn option<'a>(opts: &'a str, key: &str) -> Option<&'a str> {
    opts.split(',').find_map(|o| o.strip_prefix(key))
}

fn mib(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

/// The hugetlb memfd candidate for a segment of `file_len` bytes (data offset included).
fn hugetlb_memfd(size: u64, file_len: u64) -> Candidate {
    let need = file_len.div_ceil(size);
    let (available, detail) = match hugetlb_available(size) {
        Some(free) if free >= need => (true, format!("{free} free {} pages", mib(size))),
        Some(free) => (
            false,
            format!(
                "{free} free {} hugetlb pages, {need} needed (reserve more: sysctl \
                 vm.nr_hugepages=N, or /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages)",
                mib(size),
                size >> 10
            ),
        ),
        None => (
            false,
            format!("no {} hugetlb pool in this kernel", mib(size)),
        ),
    };
    Candidate {
        backing: PageBacking::HugetlbMemfd,
        available,
        detail,
        advise_only: false,
    }
}

/// The transparent-huge-page memfd candidate.
fn thp_memfd(size: u64) -> Candidate {
    let mode = shmem_mode();
    let (available, detail) = match mode.as_deref() {
        Some(m @ ("advise" | "within_size" | "always" | "force")) => {
            (true, format!("shmem_enabled is {m}"))
        }
        Some(m) => {
            let per_size = read_trim(&format!("{THP}/hugepages-{}kB/shmem_enabled", size >> 10))
                .and_then(|t| selected(&t).map(str::to_string))
                .filter(|s| s != "inherit" && s != "never");
            let note = per_size.map_or(String::new(), |p| {
                format!(
                    " (hugepages-{}kB/shmem_enabled is {p}, but it applies to anonymous \
                     shared memory only, not to memfds)",
                    size >> 10
                )
            });
            (
                false,
                format!(
                    "{THP}/shmem_enabled is {m}{note}; enable with: echo advise > \
                     {THP}/shmem_enabled"
                ),
            )
        }
        None => (
            false,
            "this kernel has no transparent huge pages for shared memory".into(),
        ),
    };
    Candidate {
        backing: PageBacking::ThpMemfd,
        available,
        advise_only: mode.as_deref() == Some("advise"),
        detail,
    }
}

/// The candidates for a named file in the filesystem holding `folder`.
fn file_candidates(folder: &Path, size: u64, file_len: u64) -> Vec<Candidate> {
    let Some((point, fstype, opts)) = mount_of(folder) else {
        return vec![Candidate {
            backing: PageBacking::ThpFile,
            available: false,
            detail: format!(
                "cannot find the mount of {} in /proc/self/mountinfo",
                folder.display()
            ),
            advise_only: false,
        }];
    };
    let at = point.display();
    let enable = format!(
        "mount a tmpfs with huge=within_size (mount -t tmpfs -o huge=within_size,size=8g \
         tmpfs /mnt/stridemap) and set STRIDEMAP_TEMP_FOLDER=/mnt/stridemap; {} is on {at} \
         ({fstype})",
        folder.display()
    );
    match fstype.as_str() {
        "hugetlbfs" => {
            let page = option(&opts, "pagesize=")
                .and_then(parse_size)
                .or_else(|| meminfo("Hugepagesize:").map(|k| k << 10))
                .unwrap_or(size);
            let mut c = hugetlb_memfd(page, file_len);
            c.backing = PageBacking::HugetlbFile;
            if page != size {
                c.available = false;
                c.detail = format!(
                    "{at} is hugetlbfs with {} pages; segments use {} pages",
                    mib(page),
                    mib(size)
                );
            } else {
                c.detail = format!("{at} is hugetlbfs: {}", c.detail);
            }
            vec![c]
        }
        "tmpfs" => {
            let global = shmem_mode();
            let huge = option(&opts, "huge=").unwrap_or("never");
            let (available, detail, advise_only) = match (global.as_deref(), huge) {
                (Some("deny"), _) => (
                    false,
                    format!(
                        "{THP}/shmem_enabled is deny, which turns huge= mounts off ({at} has \
                         huge={huge})"
                    ),
                    false,
                ),
                (Some("force"), _) => (
                    true,
                    format!("{THP}/shmem_enabled is force (all tmpfs mounts)"),
                    false,
                ),
                (_, h @ ("within_size" | "always")) => {
                    (true, format!("{at} is mounted huge={h}"), false)
                }
                (_, "advise") => (true, format!("{at} is mounted huge=advise"), true),
                (_, h) => (false, format!("{at} is mounted huge={h}; {enable}"), false),
            };
            vec![Candidate {
                backing: PageBacking::ThpFile,
                available,
                detail,
                advise_only,
            }]
        }
        _ => vec![Candidate {
            backing: PageBacking::ThpFile,
            available: false,
            detail: format!("{at} is {fstype}, not tmpfs; {enable}"),
            advise_only: false,
        }],
    }
}

/// `2M`, `1G`, `2048k` or bytes (hugetlbfs `pagesize=`).
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// What the system offers a new segment with `capacity` data bytes, for a pool of `kind`
/// whose named segments go to `folder` (the pool's folder, or a temp root).
///
/// ```
/// use stridemap_shm::{SegmentKind, huge_probe};
/// let p = huge_probe(SegmentKind::File, Some(std::path::Path::new("/tmp")), 1 << 30);
/// for c in &p.candidates {
///     println!("{}: {} ({})", c.backing, c.available, c.detail);
/// }
/// ```
pub fn huge_probe(kind: SegmentKind, folder: Option<&Path>, capacity: u64) -> HugeProbe {
    let size = huge_page_size();
    let file_len = capacity.saturating_add(size);
    let candidates = match kind {
        SegmentKind::Memfd => vec![hugetlb_memfd(size, file_len), thp_memfd(size)],
        SegmentKind::File => {
            let folder = folder.map(Path::to_path_buf).unwrap_or_else(|| {
                std::env::var_os(stridemap::__producer_policy::TEMP_FOLDER_ENV)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/dev/shm"))
            });
            file_candidates(&folder, size, file_len)
        }
    };
    HugeProbe {
        page_size: size,
        candidates,
    }
}

/// The huge page size a new segment of `n` data bytes asks for under `mode`: none for
/// `Never`, every segment for `Require`, segments of at least one huge page for `Auto`.
///
/// Under `Auto` the answer is yes only when a mechanism is available now for `kind` (named
/// files: in `root`, else the policy's first choice), so that without one a segment is laid
/// out exactly as without huge pages.
pub(crate) fn page_size_for(
    mode: HugePages,
    n: u64,
    kind: SegmentKind,
    root: Option<&Path>,
) -> Option<u64> {
    match mode {
        HugePages::Never => None,
        HugePages::Require => Some(huge_page_size()),
        HugePages::Auto => {
            let h = huge_page_size();
            let capacity = round_up(n, h)?;
            (n >= h && huge_probe(kind, root, capacity).chosen().is_some()).then_some(h)
        }
    }
}

/// The page size of the hugetlbfs holding `dir`, when it is one (`statfs`).
pub(crate) fn hugetlbfs_page(dir: &Path) -> Option<u64> {
    const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
    let st = rustix::fs::statfs(dir).ok()?;
    ((st.f_type as u64) & 0xffff_ffff == HUGETLBFS_MAGIC).then_some(st.f_bsize as u64)
}

/// `n` rounded up to whole huge pages of `size` bytes.
pub(crate) fn round_up(n: u64, size: u64) -> Option<u64> {
    n.checked_next_multiple_of(size)
}

/// Bytes of `[start, start + len)` of this process's address space that the kernel maps with
/// huge pages right now: PMD-mapped shmem or file pages (`ShmemPmdMapped`, `FilePmdMapped` in
/// `/proc/self/smaps`) and hugetlb pages. Counted per mapping that overlaps the range.
pub(crate) fn huge_mapped(start: usize, len: usize) -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let end = start.saturating_add(len);
    let mut total = 0u64;
    let mut inside = false;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(first) = it.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            && !first.ends_with(':')
        {
            inside = a < end && start < b;
            continue;
        }
        if !inside {
            continue;
        }
        let kb: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match first {
            "ShmemPmdMapped:" | "FilePmdMapped:" => total += kb << 10,
            // Only hugetlb mappings have these non-zero.
            "Shared_Hugetlb:" | "Private_Hugetlb:" => total += kb << 10,
            _ => {}
        }
    }
    Ok(total)
}

/// Bytes of `bytes` (a mapping of a segment, the producer's or a consumer's) that the kernel
/// maps with huge pages right now, from `/proc/self/smaps`: PMD-mapped shared-memory or file
/// pages, and hugetlb pages. Counted over the whole mappings that overlap `bytes`.
///
/// ```
/// let v = vec![0u8; 4096];
/// // A heap buffer this small is never huge-mapped.
/// assert_eq!(stridemap_shm::huge_page_bytes(&v)?, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// The I/O error of reading `/proc/self/smaps` (procfs not mounted, or not readable).
pub fn huge_page_bytes(bytes: &[u8]) -> std::io::Result<u64> {
    huge_mapped(bytes.as_ptr() as usize, bytes.len())
}

/// [`huge_page_bytes`] of a consumer's mapping (whose bytes it may not lend as a slice).
///
/// # Errors
/// If `/proc/self/smaps` cannot be read.
pub fn mapping_huge_page_bytes(m: &stridemap::Mapping) -> std::io::Result<u64> {
    let len = usize::try_from(m.descriptor().buffer_len()).unwrap_or(usize::MAX);
    huge_mapped(m.as_ptr() as usize, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_choices_and_mount_options_parse() {
        assert_eq!(
            selected("always within_size advise [never] deny force"),
            Some("never")
        );
        assert_eq!(selected("[always] inherit"), Some("always"));
        assert_eq!(selected("always"), None);
        assert_eq!(
            option("rw,size=8g,huge=within_size", "huge="),
            Some("within_size")
        );
        assert_eq!(option("rw,size=8g", "huge="), None);
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2048k"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(unescape(b"/mnt/a\\040b"), b"/mnt/a b");
        assert_eq!(unescape(b"/mnt/\\04"), b"/mnt/\\04");
        assert_eq!(unescape(b"/mnt/\\377x"), b"/mnt/\xffx");
        assert_eq!(HugePages::parse("auto"), Some(HugePages::Auto));
    }

    #[test]
    fn the_root_mount_is_found() {
        let (point, _, _) = mount_of(Path::new("/")).expect("/ is mounted");
        assert_eq!(point, Path::new("/"));
        let p = huge_probe(SegmentKind::Memfd, None, 64 << 20);
        assert_eq!(p.candidates.len(), 2);
        assert!(p.page_size.is_power_of_two());
        assert!(!p.summary().is_empty());
    }
}
