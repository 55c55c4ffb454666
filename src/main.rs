//! The `syncer` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use syncer::cli::{Cli, Command, daemon, demo, dev_registry, members};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Version => {
            println!("syncer {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Daemon(args) => match matches.subcommand_matches("daemon") {
            Some(sub) => daemon::run(&args, sub),
            None => ExitCode::from(daemon::EXIT_RUNTIME),
        },
        Command::Demo(args) => demo::run(&args),
        Command::DevRegistry(args) => dev_registry::run(&args),
        Command::Members(args) => members::run(&args),
    }
}
