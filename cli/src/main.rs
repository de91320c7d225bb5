//! The `stridemap` command line: the demo, descriptor tools, the orphan sweep and the
//! benchmark report.
//!
//! Exit codes: 0 success; 2 bad usage, or a request the machine cannot hold (refused before
//! anything is allocated: the admission check); 3 a descriptor or file that breaks a SPEC rule or
//! the trust policy (the message names the rule); 1 any other failure.

// Linux only: memfd seals, openat2, /proc/self/fd and flock on shared files have no portable
// equivalent here. `stridemap-core` (the descriptor alone) builds everywhere, no_std included.
#[cfg(target_os = "macos")]
compile_error!(
    "stridemap-cli supports Linux only, and this target is macOS; stridemap-core (the descriptor alone) builds here"
);
#[cfg(windows)]
compile_error!(
    "stridemap-cli supports Linux only, and this target is Windows; stridemap-core (the descriptor alone) builds here"
);
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!(
    "stridemap-cli supports Linux only, and this target's OS is not Linux; stridemap-core (the descriptor alone) builds here"
);

mod bench;
mod demo;
mod files;
mod wire;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Share numeric arrays between processes with zero copies.
#[derive(Parser, Debug)]
#[command(name = "stridemap", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Segment kinds for the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// A sealed memfd passed as an fd.
    Memfd,
    /// A named file in a private folder.
    File,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Share a large array with worker processes, hand them views, check their answers.
    Demo {
        /// Array size in bytes (suffixes K, M, G allowed).
        #[arg(long, default_value = "1G", value_parser = files::parse_size)]
        size: u64,
        /// Number of worker processes.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        workers: u32,
        /// Segment kind.
        #[arg(long, value_enum, default_value_t = Kind::Memfd)]
        kind: Kind,
    },
    /// Write the fixed record describing a view of an existing file.
    Describe(files::DescribeArgs),
    /// Decode, validate and print a descriptor (fixed or compact, detected).
    Inspect {
        /// The descriptor file.
        desc: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Open a descriptor under the trust policy and write its view as a C-order .npy.
    Export {
        /// The descriptor file.
        desc: PathBuf,
        /// The .npy to write (replaced atomically if it exists).
        #[arg(short, long)]
        output: PathBuf,
        /// Also allow files below this folder (repeatable).
        #[arg(long = "allow-root")]
        allow_root: Vec<PathBuf>,
        /// Refuse views holding more bytes of elements than this (suffixes K, M, G); default:
        /// the free space of the output's filesystem less a margin (4 MiB and 1% of its
        /// size, as the producers leave on a temp root), at most 16 GiB.
        #[arg(long, value_parser = files::parse_size)]
        max_bytes: Option<u64>,
    },
    /// Describe the data of an existing .npy file, in place.
    Npy {
        /// The .npy file.
        file: PathBuf,
        /// Where to write the fixed record (replaced atomically if it exists).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Remove pool folders whose producer died (nobody holds the folder's lock) and whose
    /// files no process maps. Exit 1 if anything could not be handled (the rest is swept).
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Also sweep folders owned by other users (default: only the caller's own).
        #[arg(long)]
        all_users: bool,
        /// Sweep this folder instead of the default temp roots (repeatable).
        #[arg(long)]
        root: Vec<PathBuf>,
    },
    /// The benchmark report: ratios measured in one run on this machine.
    Bench {
        /// Fewer, shorter rounds and smaller sizes.
        #[arg(long)]
        quick: bool,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// Only these groups, as the report prints them (decode, open, views, handoff, share,
        /// "huge pages" or huge-pages, "end to end" or end-to-end, joblib).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// (internal) A demo or benchmark worker.
    #[command(name = "__worker", hide = true)]
    Worker {
        /// The producer's socket.
        #[arg(long)]
        connect: PathBuf,
    },
}

/// A failure and the exit code it deserves.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// Exit 1: an operational failure.
    pub(crate) fn other(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Exit 3: input that breaks a SPEC rule or the trust policy.
    pub(crate) fn rule(message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

impl From<stridemap::Error> for Failure {
    fn from(e: stridemap::Error) -> Failure {
        // The library's O2 hint names the Rust option; here the user types a flag.
        if let stridemap::Error::OutsideRoots { .. } | stridemap::Error::UntrustedFolder { .. } = e
        {
            return Failure::rule(
                e.to_string()
                    .replace("OpenOptions::allow_root", "--allow-root FOLDER"),
            );
        }
        match (&e, e.rule()) {
            (_, Some(_)) | (stridemap::Error::Npy { .. }, _) => Failure::rule(e.to_string()),
            _ => Failure::other(e.to_string()),
        }
    }
}

impl From<stridemap::ViewError> for Failure {
    fn from(e: stridemap::ViewError) -> Failure {
        stridemap::Error::from(e).into()
    }
}

impl From<stridemap_core::DecodeError> for Failure {
    fn from(e: stridemap_core::DecodeError) -> Failure {
        stridemap::Error::from(e).into()
    }
}

impl From<stridemap_core::LayoutError> for Failure {
    fn from(e: stridemap_core::LayoutError) -> Failure {
        stridemap::Error::from(e).into()
    }
}

impl From<stridemap_core::ParseNameError> for Failure {
    fn from(e: stridemap_core::ParseNameError) -> Failure {
        Failure::other(e.to_string())
    }
}

impl From<stridemap_core::BufferTooSmall> for Failure {
    fn from(e: stridemap_core::BufferTooSmall) -> Failure {
        Failure::other(e.to_string())
    }
}

impl From<stridemap_shm::Error> for Failure {
    fn from(e: stridemap_shm::Error) -> Failure {
        match e {
            stridemap_shm::Error::Stridemap(e) => e.into(),
            // Refused before anything was allocated: exit 2, and the flag that asks for less.
            e @ stridemap_shm::Error::NoSpace { .. } => Failure {
                code: 2,
                message: format!("{e}; nothing was allocated (ask for less with --size)"),
            },
            e => Failure::other(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::other(e.to_string())
    }
}

pub(crate) type CliResult<T = ()> = Result<T, Failure>;

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Demo {
            size,
            workers,
            kind,
        } => demo::run(size, workers, kind == Kind::Memfd),
        Command::Describe(args) => files::describe(&args),
        Command::Inspect { desc, json } => files::inspect(&desc, json),
        Command::Export {
            desc,
            output,
            allow_root,
            max_bytes,
        } => files::export(&desc, &output, &allow_root, max_bytes),
        Command::Npy { file, output } => files::npy(&file, &output),
        Command::Gc {
            dry_run,
            all_users,
            root,
        } => files::gc(dry_run, all_users, &root),
        Command::Bench { quick, json, only } => bench::command(quick, json, &only),
        Command::Worker { connect } => worker::run(&connect),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("stridemap: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
