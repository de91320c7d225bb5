//! The `stridemap` command line.

mod bench;

use clap::{Parser, Subcommand};

/// Share numeric arrays between processes with zero copies.
#[derive(Parser, Debug)]
#[command(name = "stridemap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The benchmark report: ratios measured in one run on this machine.
    Bench {
        /// Fewer, shorter rounds (for a quick look or CI).
        #[arg(long)]
        quick: bool,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Bench { quick, json } => {
            let budget = bench::Budget::new(quick);
            match bench::run(budget, &|stage| eprintln!("measuring {stage} …")) {
                Ok(rows) => {
                    if json {
                        let all: Vec<_> = rows.iter().map(bench::Row::json).collect();
                        println!("{}", serde_json::Value::Array(all));
                    } else {
                        bench::print_table(&rows);
                    }
                    0
                }
                Err(e) => {
                    eprintln!("stridemap bench: {e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
