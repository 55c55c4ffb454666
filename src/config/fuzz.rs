//! Property tests of the configuration (issue 20): every setting of the table given a
//! hostile value on the command line (through the binary's own argv parser) or in the YAML
//! file either makes a valid configuration or is refused with an error naming that setting;
//! mangled YAML files are refused with the file named; never a panic. A fixed number of cases
//! in CI, more with `PROPTEST_CASES` (docs/RELIABILITY.md, "Fuzzed inputs").

use std::path::Path;

use clap::Parser;
use proptest::prelude::*;

use super::settings::{Form, Id, SETTINGS, Spec, defaults};
use super::{Config, ConfigError, file, parse};
use crate::cli::{Cli, Command};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(crate::fuzz_cases(512))
    }
}

/// A value of the shapes settings take (numbers, durations, addresses, URLs, lists, names,
/// booleans), valid or not, or anything at all.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just("99999999999999999999999".to_owned()),
        "[0-9]{1,6}(ns|ms|s|m|h|d|w|y|)".prop_map(String::from),
        Just("1.5s".to_owned()),
        "(true|false|yes|no|on|off|1|0|TRUE|maybe)".prop_map(String::from),
        "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|\\[::1\\]|::1|localhost|999\\.1\\.1\\.1|)(:[0-9]{0,6})?"
            .prop_map(String::from),
        "(http|https|ftp|)(://)?[a-z.]{0,8}(:[0-9]{0,6})?(/[a-z]*)?".prop_map(String::from),
        "([a-z0-9:./-]{0,10},){1,4}".prop_map(String::from),
        "(single|cluster|managed|etcd|servicecenter|eureka|json|text|debug|lan|wan|local|tls1\\.2|tls1\\.3)"
            .prop_map(String::from),
        "[a-z0-9_-]{1,70}".prop_map(String::from),
        "[\\x00-\\x1f\\x7f]{1,3}".prop_map(String::from),
        any::<String>(),
        (100usize..5000).prop_map(|n| "a".repeat(n)),
    ]
}

/// A valid configuration of its own (as [`Config::for_test`]): loopback, port 0.
const BASE: &[(Id, &str, &str)] = &[
    (Id::Node, "--node", "n1"),
    (Id::BindAddr, "--bind-addr", "127.0.0.1:0"),
    (Id::RpcAddr, "--rpc-addr", "127.0.0.1:0"),
    (Id::AdminAddr, "--admin-addr", "127.0.0.1:0"),
    (Id::DataDir, "--data-dir", "/nonexistent/syncer-fuzz"),
];

/// The base flags, less the one of `spec`.
fn base_argv(spec: &Spec) -> Vec<String> {
    let mut argv = vec!["syncer".to_owned(), "daemon".to_owned()];
    for (id, flag, value) in BASE {
        if *id != spec.id {
            argv.push(format!("{flag}={value}"));
        }
    }
    argv
}

/// A refusal of a TLS file names the file and what it was read as ("registry TLS CA"), not
/// the setting: that is enough to find it.
fn names_file(e: &ConfigError, value: &str) -> bool {
    matches!(
        e,
        ConfigError::Tls(_) | ConfigError::RegistryTls(_) | ConfigError::EtcdTls(_)
    ) && e.to_string().contains(value.trim())
}

/// Settings that have a flag.
fn flagged() -> Vec<&'static Spec> {
    SETTINGS.iter().filter(|s| s.flag.is_some()).collect()
}

/// What names `spec` in an error about a value given by flag (its long name) or by a file
/// key (the key, `in <file>`).
fn names_setting(text: &str, spec: &Spec, by_file: Option<&str>) -> bool {
    // Its name, its flag (some checks name the flag whichever layer gave the value), or the
    // file key it was given by.
    text.contains(spec.name)
        || spec
            .flag
            .is_some_and(|f| text.contains(&format!("--{}", f.long)))
        || by_file.is_some_and(|key| text.contains(key))
}

/// The scalar a one-key document holds, as text.
fn doc_value(text: &str) -> Option<String> {
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    while let serde_yaml_ng::Value::Mapping(m) = v {
        v = m.into_iter().next()?.1;
    }
    match v {
        serde_yaml_ng::Value::String(s) => Some(s),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

proptest! {
    #![proptest_config(config())]

    /// `syncer daemon --FLAG VALUE` for every flag of the table: clap refuses it as a usage
    /// error, or the configuration is valid, or refused naming that flag.
    #[test]
    fn every_flag_parses_or_names_itself(
        which in any::<prop::sample::Index>(),
        value in hostile_value(),
        glued in any::<bool>(),
    ) {
        let specs = flagged();
        let spec = specs[which.index(specs.len())];
        let Some(flag) = spec.flag else { return Ok(()) };
        let long = format!("--{}", flag.long);
        let mut argv = base_argv(spec);
        if glued || flag.form != Form::Switch {
            // `--flag=value` also carries values that start with '-'.
            argv.push(format!("{long}={value}"));
        } else {
            argv.push(long.clone());
        }
        let cli = match Cli::try_parse_from(&argv) {
            Ok(cli) => cli,
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                return Ok(());
            }
        };
        let Command::Daemon(args) = cli.command else {
            return Err(TestCaseError::fail("not the daemon command"));
        };
        match Config::load(None, args.settings.clone()) {
            Ok(_) => {}
            Err(e) => {
                let text = e.to_string();
                prop_assert!(
                    names_setting(&text, spec, None) || names_file(&e, &value),
                    "{:?}: the refusal does not name {}: {}",
                    argv,
                    long,
                    text
                );
            }
        }
    }

    /// Every YAML key of every setting with a hostile value (a scalar of any type, a list, a
    /// mapping, null): the file is refused naming the key, or the configuration is valid, or
    /// refused naming the key.
    #[test]
    fn every_yaml_key_parses_or_names_itself(
        which in any::<prop::sample::Index>(),
        key_at in any::<prop::sample::Index>(),
        value in prop_oneof![
            4 => hostile_value().prop_map(serde_yaml_ng::Value::String),
            1 => any::<i64>().prop_map(serde_yaml_ng::Value::from),
            1 => any::<f64>().prop_map(serde_yaml_ng::Value::from),
            1 => any::<bool>().prop_map(serde_yaml_ng::Value::Bool),
            1 => Just(serde_yaml_ng::Value::Null),
            1 => proptest::collection::vec(hostile_value(), 0..3).prop_map(|v| serde_yaml_ng::Value::Sequence(v.into_iter().map(serde_yaml_ng::Value::String).collect())),
            1 => Just(serde_yaml_ng::Value::Mapping(serde_yaml_ng::Mapping::new())),
        ],
    ) {
        let specs: Vec<&Spec> = SETTINGS.iter().filter(|s| !s.file_keys.is_empty()).collect();
        let spec = specs[which.index(specs.len())];
        let key = spec.file_keys[key_at.index(spec.file_keys.len())];
        let mut doc = value;
        for part in key.rsplit('.') {
            let mut map = serde_yaml_ng::Mapping::new();
            map.insert(serde_yaml_ng::Value::String(part.to_owned()), doc);
            doc = serde_yaml_ng::Value::Mapping(map);
        }
        let text = serde_yaml_ng::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let last = key.rsplit('.').next().unwrap_or(key);
        match file::read_text(&text, Path::new("t.yaml")) {
            Err(e) => {
                let why = e.to_string();
                prop_assert!(why.contains("t.yaml") && why.contains(last), "{}: {}", text, why);
            }
            Ok((layer, warnings)) => {
                // A null or empty mapping leaves the setting unset: its default is used.
                let given = layer.get(spec.id).is_some();
                let Command::Daemon(base) = Cli::try_parse_from(base_argv(spec))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .command
                else {
                    return Err(TestCaseError::fail("not the daemon command"));
                };
                let settings = defaults().overlaid(layer).overlaid(base.settings);
                if let Err(e) = parse::resolve(&settings, warnings)
                    && given
                {
                    let why = e.to_string();
                    let value = doc_value(&text).unwrap_or_default();
                    prop_assert!(names_setting(&why, spec, Some(key)) || (!value.is_empty() && names_file(&e, &value)), "{}: the refusal does not name {}: {}", text, key, why);
                }
            }
        }
    }

    /// The sample configuration shipped in contrib/ with its bytes mangled: read, or refused
    /// with the file named; never a panic.
    #[test]
    fn mangled_yaml_files_are_read_or_refused(
        edits in proptest::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<u8>()), 1..5),
    ) {
        const SAMPLE: &str = include_str!("../../contrib/syncer.yaml");
        let mut bytes = SAMPLE.as_bytes().to_vec();
        for (op, at, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match op {
                0 => bytes[at] = b":-[]{}#&*!|>'\"%@ \n\t"[usize::from(byte) % 18],
                1 => { bytes.remove(at); }
                2 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        match file::read_text(&text, Path::new("t.yaml")) {
            Err(e) => prop_assert!(matches!(e, ConfigError::File { .. } | ConfigError::Invalid { .. } | ConfigError::InvalidSecret { .. } | ConfigError::Missing(_)), "{:?}", e),
            Ok((layer, warnings)) => {
                let _ = parse::resolve(&defaults().overlaid(layer), warnings);
                let _ = Config::load(None, super::Layer::default());
            }
        }
    }
}

/// Found by the properties above: a list setting given a mapping in the file was refused as
/// "registry: data did not match any variant of untagged enum Either", naming neither the key
/// nor what was expected.
#[test]
fn a_list_key_of_the_wrong_type_names_the_key_and_the_forms() {
    let error = file::read_text("registry:\n  tenants: {}\n", Path::new("t.yaml"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("registry.tenants")
            && error.contains("a string, number or boolean, or a list of them"),
        "{error}"
    );
    let (layer, _) = file::read_text(
        "registry:\n  tenants: [a/b, 7, true]\n",
        Path::new("t.yaml"),
    )
    .unwrap_or_else(|e| panic!("a list of scalars: {e}"));
    assert_eq!(
        layer.get(Id::ScTenants).map(|s| s.value.as_str()),
        Some("a/b,7,true")
    );
}

/// Found by the properties above: an empty TLS file path was refused as "cannot read
/// registry TLS CA : No such file or directory", naming no setting.
#[test]
fn an_empty_tls_path_is_refused_naming_its_flag() {
    for (flag, other) in [
        ("--sc-tls-ca", None),
        ("--sc-tls-cert", Some("--sc-tls-key=k.pem")),
        ("--tls-ca", None),
        ("--etcd-ca", None),
    ] {
        let mut argv = base_argv(&SETTINGS[Id::Mode as usize]);
        argv.push(format!("{flag}= "));
        argv.extend(other.map(str::to_owned));
        let Ok(Cli {
            command: Command::Daemon(args),
        }) = Cli::try_parse_from(&argv)
        else {
            panic!("{argv:?} should parse");
        };
        let error = Config::load(None, args.settings.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains(flag) && error.contains("empty; a file path is needed"),
            "{flag}: {error}"
        );
    }
}
