//! The orphan sweep: pool folders whose producer died (`kill -9`) are removed once no live
//! process holds any of their files.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::temp::{owner_alive, parse_folder_name};
use crate::{Error, Result};

/// What a sweep found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Folders removed (or, in a dry run, that would be).
    pub removed: Vec<PathBuf>,
    /// Folders whose owner is alive.
    pub owner_alive: Vec<PathBuf>,
    /// Folders of a dead owner whose files some live process still maps.
    pub in_use: Vec<PathBuf>,
}

/// Sweeps `stridemap-<pid>-<start>-<uuid>` folders directly below each of `roots`: a folder
/// whose owner (pid and start time) is not alive and whose files are all free (each can be
/// locked exclusively) is removed with its files. With `dry_run`, nothing is removed.
///
/// ```no_run
/// let report = stridemap_shm::sweep(&stridemap_shm::segment_bases(), true)?;
/// for f in &report.removed { println!("would remove {}", f.display()); }
/// # Ok::<(), stridemap_shm::Error>(())
/// ```
pub fn sweep(roots: &[PathBuf], dry_run: bool) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((pid, start)) = name.to_str().and_then(parse_folder_name) else {
                continue;
            };
            let folder = entry.path();
            // Only real folders: a symlink named like a pool folder is not ours to follow.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if owner_alive(pid, start) {
                report.owner_alive.push(folder);
                continue;
            }
            match sweep_folder(&folder, dry_run)? {
                true => report.removed.push(folder),
                false => report.in_use.push(folder),
            }
        }
    }
    Ok(report)
}

/// Removes a dead owner's folder if none of its files is held; whether it was (or would be).
fn sweep_folder(folder: &Path, dry_run: bool) -> Result<bool> {
    let mut locked = Vec::new();
    let entries = std::fs::read_dir(folder).map_err(|e| Error::from_io("reading", folder, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            // Something we did not make (a folder, a link): leave the folder to a human.
            return Ok(false);
        }
        let Ok(file) = File::open(&path) else {
            return Ok(false);
        };
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(false);
        }
        locked.push((path, file));
    }
    if dry_run {
        return Ok(true);
    }
    // Unlink while holding the locks, so no reader can start on a file being removed.
    for (path, _file) in &locked {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::from_io("removing", path, e));
        }
    }
    match std::fs::remove_dir(folder) {
        Ok(()) => {
            log::debug!("stridemap: swept orphaned folder {}", folder.display());
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::from_io("removing", folder, e)),
    }
}
