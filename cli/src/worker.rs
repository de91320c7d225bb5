//! A worker process of the demo and the benchmarks: maps the views it is handed, sums them
//! into the shared output array, answers.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;

use stridemap::socket::{Event, Session};
use stridemap::{Mapping, Mode, OpenOptions, socket};

use crate::wire::{self, ACK};
use crate::{CliResult, Failure};

/// Serves the producer at `socket` until it says quit; a failure is answered, then ends the
/// worker with its exit code.
pub(crate) fn run(socket: &Path) -> CliResult {
    let s = UnixStream::connect(socket)
        .map_err(|e| Failure::other(format!("connecting to {}: {e}", socket.display())))?;
    let opts = OpenOptions::new();
    // What this connection is handed through the session stays mapped until the producer
    // releases it (or the connection ends).
    let mut session = Session::new(opts.clone());
    let mut views: HashMap<u32, Mapping> = HashMap::new();
    let mut output: Option<Mapping> = None;
    loop {
        let tag = wire::get_u8(&s)?;
        let done = step(&s, tag, &opts, &mut session, &mut views, &mut output);
        match done {
            Ok(true) => return Ok(()),
            Ok(false) => wire::put(&s, &[ACK])?,
            Err(f) => {
                wire::nak(&s, &f.message);
                return Err(f);
            }
        }
    }
}

/// One request; `Ok(true)` means quit.
fn step(
    s: &UnixStream,
    tag: u8,
    opts: &OpenOptions,
    session: &mut Session,
    views: &mut HashMap<u32, Mapping>,
    output: &mut Option<Mapping>,
) -> CliResult<bool> {
    match tag {
        wire::SESSION_VIEW => {
            let id = wire::get_u32(s)?;
            let m = session.recv(s)?;
            m.volatile_view::<f64>()?;
            views.insert(id, m);
        }
        wire::RELEASE => {
            for _ in 0..wire::get_u32(s)? {
                if let Event::Mapped(_) = session.next(s)? {
                    return Err(Failure::other("a descriptor among release records"));
                }
            }
        }
        wire::VIEW => {
            let id = wire::get_u32(s)?;
            let m = opts.open(socket::recv(s)?)?;
            // Hold a mapped, validated, typed view before answering.
            m.volatile_view::<f64>()?;
            views.insert(id, m);
        }
        wire::OUTPUT => {
            *output = Some(opts.clone().mode(Mode::ReadWrite).open(socket::recv(s)?)?);
        }
        wire::TASK => {
            let id = wire::get_u32(s)?;
            let slot = wire::get_u64(s)?;
            let view = views
                .get(&id)
                .ok_or_else(|| Failure::other(format!("no view {id}")))?;
            // A frozen memfd lends a slice (summed at slice speed); a named file may be
            // rewritten by others, so its elements are copied out one by one.
            let sum: f64 = if view.is_frozen() {
                view.view::<f64>()?.iter().sum()
            } else {
                view.volatile_view::<f64>()?.iter().sum()
            };
            let out = output
                .as_mut()
                .ok_or_else(|| Failure::other("no output array"))?;
            // Every worker writes its own slots of the one shared output, no unsafe: the
            // write is a single volatile store, no reference to the shared bytes is made.
            let slot = usize::try_from(slot)
                .map_err(|_| Failure::other("output slot does not fit this machine's usize"))?;
            out.volatile_view_mut::<f64>()?.set(&[slot], sum)?;
        }
        wire::DROP => {
            let id = wire::get_u32(s)?;
            views.remove(&id);
        }
        wire::BULK => {
            let mut left = wire::get_u64(s)?;
            let mut buf = vec![0u8; 1 << 20];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                let got = (&*s)
                    .read(&mut buf[..n])
                    .map_err(|e| Failure::other(format!("bulk: {e}")))?;
                if got == 0 {
                    return Err(Failure::other("bulk: connection closed"));
                }
                left -= got as u64;
            }
        }
        wire::PING => {
            let _id = wire::get_u32(s)?;
            let mut buf = [0u8; stridemap_core::RECORD_LEN];
            wire::get(s, &mut buf)?;
        }
        wire::QUIT => return Ok(true),
        other => return Err(Failure::other(format!("unknown request {other:#x}"))),
    }
    Ok(false)
}

/// Worker processes started from this binary, each connected by its own socket.
pub(crate) struct Crew {
    dir: std::path::PathBuf,
    pub(crate) conns: Vec<UnixStream>,
    children: Vec<std::process::Child>,
}

impl Crew {
    /// Starts `n` workers and waits for each to connect.
    pub(crate) fn spawn(n: u32) -> CliResult<Crew> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("stridemap-ctl-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| Failure::other(format!("{}: {e}", dir.display())))?;
        let mut crew = Crew {
            dir,
            conns: Vec::new(),
            children: Vec::new(),
        };
        let sock = crew.dir.join("ctl.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock)?;
        let exe = std::env::current_exe()?;
        for _ in 0..n {
            let child = std::process::Command::new(&exe)
                .arg("__worker")
                .arg("--connect")
                .arg(&sock)
                .stdin(std::process::Stdio::null())
                .spawn()
                .map_err(|e| Failure::other(format!("starting a worker: {e}")))?;
            crew.children.push(child);
            let (conn, _) = listener.accept()?;
            crew.conns.push(conn);
        }
        Ok(crew)
    }

    /// Asks every worker to exit and checks that they did, cleanly.
    pub(crate) fn finish(mut self) -> CliResult {
        for c in &self.conns {
            wire::put(c, &[wire::QUIT])?;
        }
        for mut child in std::mem::take(&mut self.children) {
            let status = child.wait()?;
            if !status.success() {
                return Err(Failure::other(format!("a worker exited with {status}")));
            }
        }
        Ok(())
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends the release records due to the worker at `s` (its session lets go of them).
pub(crate) fn release(sender: &mut stridemap_shm::Sender, s: &UnixStream) -> CliResult {
    let n = sender.pending();
    if n == 0 {
        return Ok(());
    }
    wire::put(s, &[wire::RELEASE])?;
    wire::put_u32(s, n as u32)?;
    sender.flush(s)?;
    wire::ack(s)
}

/// Hands view `id` to the worker at `s`: the descriptor, and for a memfd an fd of its own;
/// through the worker's session when `session` is the connection's [`Sender`], which sends
/// the release records due first and the fd only the first time the connection gets the
/// segment.
///
/// [`Sender`]: stridemap_shm::Sender
pub(crate) fn hand<T>(
    s: &UnixStream,
    id: u32,
    desc: &stridemap::ValidDescriptor,
    shared: &stridemap_shm::SharedArray<T>,
    session: Option<&mut stridemap_shm::Sender>,
) -> CliResult {
    // The request in one write, then the descriptor (and fd) in one sendmsg: two writes, as
    // for the bare message it is compared with.
    let tag = if session.is_some() {
        wire::SESSION_VIEW
    } else {
        wire::VIEW
    };
    let [a, b, c, d] = id.to_le_bytes();
    wire::put(s, &[tag, a, b, c, d])?;
    match session {
        Some(sender) => sender.send_view(s, shared, desc)?,
        None => shared.send_view(s, desc)?,
    }
    wire::ack(s)
}
