//! The flags of `syncer daemon`.
//!
//! The flags and environment variables of the settings are built from the configuration's
//! table (`crate::config::settings`) with clap's builder API; `--config` and `--check` are
//! the two flags that are not settings. Every setting is taken as text, without a clap
//! default: whether a value was given, and whether it came from the command line or the
//! environment, decides its precedence over the YAML file, and the raw text lets error
//! messages quote exactly what the operator wrote. Defaults live in the table, for the same
//! reason.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, FromArgMatches};

use crate::config::settings::{Alias, Form, SETTINGS, Spec};
use crate::config::{Config, Layer};

const PRECEDENCE: &str = "\
Settings come from four places; later ones win:
  defaults < --config FILE (YAML) < environment (SYNCER_*) < command-line flags.
Each flag above names its environment variable. `--check` prints every effective setting
with the place it came from.

Examples (the original Syncer's command lines work unchanged):
  syncer daemon --sc-addr http://10.0.0.10:30100 --bind-addr 10.0.0.10:30190 --rpc-addr 10.0.0.10:30191
  syncer daemon --sc-addr http://10.0.0.11:30100 --bind-addr 10.0.0.11:30190 --rpc-addr 10.0.0.11:30191 --join-addr 10.0.0.10:30190";

/// Clap ids of the two flags that are not settings.
const CONFIG: &str = "config";
const CHECK: &str = "check";

/// What `syncer daemon` was given.
#[derive(Debug, Clone)]
pub struct DaemonArgs {
    /// The YAML file (`--config`, `SYNCER_CONFIG`).
    pub config: Option<PathBuf>,
    /// `--check`: validate, print the effective settings, exit.
    pub check: bool,
    /// The settings given on the command line or in the environment, each with its origin.
    pub settings: Layer,
}

impl clap::Args for DaemonArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.after_long_help(PRECEDENCE)
            .arg(
                Arg::new(CONFIG)
                    .long(CONFIG)
                    .value_name("FILE")
                    .env("SYNCER_CONFIG")
                    .value_parser(clap::value_parser!(PathBuf))
                    .action(ArgAction::Set)
                    .help(
                        "YAML configuration file (keys of the original Syncer 1.4 and 1.3, \
                         see docs/CONFIG.md)",
                    ),
            )
            .arg(
                Arg::new(CHECK)
                    .long(CHECK)
                    .value_name("CHECK")
                    .env("SYNCER_CHECK")
                    .value_parser(BoolishValueParser::new())
                    .num_args(0..=1)
                    .default_missing_value("true")
                    .action(ArgAction::Set)
                    .help("Validate the configuration, print the effective settings and exit"),
            )
            .args(SETTINGS.iter().filter_map(setting_arg))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The clap argument of one setting of the table; `None` for settings only the file sets.
fn setting_arg(spec: &'static Spec) -> Option<Arg> {
    let flag = spec.flag?;
    let mut arg = Arg::new(spec.name)
        .long(flag.long)
        .value_name(flag.value_name)
        .value_parser(clap::value_parser!(String))
        // A list may be given as one comma-separated value or by repeating the flag.
        .action(if spec.list {
            ArgAction::Append
        } else {
            ArgAction::Set
        })
        .help(spec.help_text());
    if !spec.list {
        // A setting given twice takes the last value, as shells and wrappers expect when they
        // append an override to a base command line.
        arg = arg.overrides_with(spec.name);
    }
    if let Some(var) = spec.env {
        arg = arg.env(var);
    }
    for alias in flag.aliases {
        arg = match *alias {
            Alias::Visible(name) => arg.visible_alias(name),
            Alias::Hidden(name) => arg.alias(name),
        };
    }
    arg = match flag.form {
        Form::Value => arg,
        Form::Number => arg.allow_negative_numbers(true),
        Form::Switch => arg.num_args(0..=1).default_missing_value("true"),
    };
    if let Some(other) = flag.conflicts_with {
        arg = arg.conflicts_with(other.name());
    }
    Some(arg)
}

impl FromArgMatches for DaemonArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut settings = Layer::default();
        for spec in SETTINGS.iter().filter(|s| s.flag.is_some()) {
            let value = if spec.list {
                match matches.get_many::<String>(spec.name) {
                    Some(values) => values.cloned().collect::<Vec<_>>().join(","),
                    None => continue,
                }
            } else {
                match matches.get_one::<String>(spec.name) {
                    Some(value) => value.clone(),
                    None => continue,
                }
            };
            let origin = match matches.value_source(spec.name) {
                Some(ValueSource::EnvVariable) => spec.env_origin(),
                _ => spec.flag_origin(),
            };
            if let Some(origin) = origin {
                settings.set(spec.id, value, origin);
            }
        }
        Ok(DaemonArgs {
            config: matches.get_one::<PathBuf>(CONFIG).cloned(),
            check: matches.get_one::<bool>(CHECK).copied().unwrap_or(false),
            settings,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = DaemonArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Exit status when the configuration is refused (also clap's status for a usage error).
pub const EXIT_CONFIG: u8 = 2;
/// Exit status of a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;

/// Runs `syncer daemon`: validate, then serve until a signal or a fatal error.
pub fn run(args: &DaemonArgs) -> std::process::ExitCode {
    use std::process::ExitCode;

    let config = match Config::load(args.config.as_deref(), args.settings.clone()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("syncer: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        print_check(&config);
        return ExitCode::SUCCESS;
    }
    if let Err(e) = crate::telemetry::init_logging(&config.log) {
        eprintln!("syncer: cannot set up logging: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async move {
        let root = tokio_util::sync::CancellationToken::new();
        crate::shutdown::spawn_signal_handler(root.clone());
        let listeners = crate::node::Listeners::bind(&config).await?;
        let notifier = crate::service::Notifier::from_env();
        crate::node::run_notifying(config, listeners, root, notifier).await
    });
    // Do not wait for tasks that ignored cancellation (the node already waited its deadline).
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "syncer failed");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `--check`: the effective settings, one per line in table order, with where each came from.
fn print_check(config: &Config) {
    println!("configuration is valid");
    for (id, value, origin) in &config.effective {
        println!("  {id:<21} = {value:<40} ({origin})");
    }
    println!("  {:<21} = {}", "advertise_ip", config.gossip.advertise_ip);
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::Origin;
    use crate::config::settings::Id;

    /// The daemon's arguments for `syncer daemon <args>`.
    fn parse(args: &[&str]) -> Result<DaemonArgs, clap::Error> {
        let argv = ["syncer", "daemon"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Daemon(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn every_flag_of_the_table_sets_its_setting() {
        for spec in SETTINGS {
            let Some(flag) = spec.flag else { continue };
            let long = format!("--{}", flag.long);
            let mut names = vec![long.clone()];
            names.extend(flag.aliases.iter().map(|alias| {
                let (Alias::Visible(a) | Alias::Hidden(a)) = alias;
                format!("--{a}")
            }));
            for name in names {
                let args = parse(&[&name, "v1"]).unwrap_or_else(|e| panic!("{name}: {e}"));
                let setting = args
                    .settings
                    .get(spec.id)
                    .unwrap_or_else(|| panic!("{name} does not set {}", spec.name));
                assert_eq!(setting.value, "v1", "{name}");
                // Whatever spelling was typed, the origin names the flag itself.
                assert_eq!(setting.origin, Origin::Flag(long.clone()), "{name}");
                assert_eq!(args.settings.iter().count(), 1, "{name}");
            }
        }
    }

    #[test]
    fn help_names_every_flag_and_variable() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("daemon")
            .expect("daemon subcommand")
            .render_long_help()
            .to_string();
        for spec in SETTINGS {
            if let Some(flag) = spec.flag {
                assert!(
                    help.contains(&format!("--{} ", flag.long)),
                    "--{}",
                    flag.long
                );
                for alias in flag.aliases {
                    match alias {
                        Alias::Visible(a) => assert!(help.contains(&format!("--{a}")), "{a}"),
                        Alias::Hidden(a) => {
                            assert!(!help.contains(&format!("--{a} ")), "{a} is hidden")
                        }
                    }
                }
            }
            if let Some(var) = spec.env {
                assert!(help.contains(var), "{var}");
            }
        }
    }

    #[test]
    fn a_setting_given_twice_takes_the_last_value_and_lists_accumulate() {
        let args = parse(&["--node", "a", "--node", "b"]).unwrap();
        assert_eq!(args.settings.get(Id::Node).unwrap().value, "b");
        let args = parse(&["--include", "shop/*", "--include", "hr/payroll,ops/*"]).unwrap();
        assert_eq!(
            args.settings.get(Id::Include).unwrap().value,
            "shop/*,hr/payroll,ops/*"
        );
    }

    #[test]
    fn flag_forms_keep_their_behaviour() {
        // A negative count reaches validation, which names the flag.
        let args = parse(&["--removal-cap", "-5"]).unwrap();
        assert_eq!(args.settings.get(Id::RemovalCap).unwrap().value, "-5");
        assert!(parse(&["--node", "-5"]).is_err());
        // A switch alone means true; a value may follow.
        let args = parse(&["--keep-stale-copies"]).unwrap();
        assert_eq!(
            args.settings.get(Id::KeepStaleCopies).unwrap().value,
            "true"
        );
        let args = parse(&["--keep-stale-copies=false"]).unwrap();
        assert_eq!(
            args.settings.get(Id::KeepStaleCopies).unwrap().value,
            "false"
        );
        // --cluster-port and its 1.4 form exclude each other.
        assert!(parse(&["--cluster-port", "1", "--peer-addr", "127.0.0.1:1"]).is_err());
        // --check and --config are not settings.
        let args = parse(&["--check", "--config", "x.yaml"]).unwrap();
        assert!(args.check);
        assert_eq!(args.config, Some(PathBuf::from("x.yaml")));
        assert_eq!(args.settings.iter().count(), 0);
        assert!(!parse(&["--check=false"]).unwrap().check);
    }
}
