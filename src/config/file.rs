//! The YAML configuration file (`--config FILE`).
//!
//! Accepts the keys of the original Syncer 1.4 (`etc/conf/syncer.yaml`, camelCase) and of 1.3
//! (snake_case), plus a few of our own; any other key is refused, naming it and its line. Keys
//! the original declared but never used are accepted and produce a warning. docs/CONFIG.md
//! lists every key.
//!
//! The keys that hold a setting come from the table (`settings.rs`): the file's shape is built
//! from their dotted paths ([`Schema`]), the file is read against it, and each setting takes
//! the value of its first key present (1.4 and our own keys before 1.3 keys). The keys that
//! need more than that are [`Special`] and handled by explicit code in [`into_layer`]: TLS
//! blocks (mapped onto the TLS settings by `file_tls.rs`), `join.enabled`, `task.params`, and
//! the keys accepted only for compatibility.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

use super::file_tls::{TlsBlocks, TlsConfig, TlsConfig13, TlsMount};
use super::scalar::{List, Scalar};
use super::settings::SETTINGS;
use super::{ConfigError, Layer, Origin};

// --- The keys that need explicit code ---

/// A key with its own handling, beside the table's plain keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    /// `listener.tlsMount`, `registry.tlsMount` (1.4): a `tlsConfigs` entry, when enabled.
    TlsMount,
    /// `tlsConfigs` (1.4): the entries the mounts name.
    TlsConfigs,
    /// `tls_config`, `servicecenter.tls_config` (1.3).
    Tls13,
    /// `join.enabled` (1.4): `false` drops `join.address`.
    JoinEnabled,
    /// `task.params` (1.4): a list of `{key, value}`; only `interval` exists.
    TaskParams,
    /// Accepted for compatibility, with a warning saying why it does nothing.
    Unused(&'static str),
}

const RETRIES_UNUSED: &str = "is not used: syncer retries joining with back-off until it succeeds";
const NO_EFFECT: &str = "has no effect (it had none in Syncer 1.3 either)";

/// Every special key, by dotted path.
const SPECIAL_KEYS: &[(&str, Special)] = &[
    ("listener.tlsMount", Special::TlsMount),
    ("join.enabled", Special::JoinEnabled),
    ("join.retryMax", Special::Unused(RETRIES_UNUSED)),
    ("join.retryInterval", Special::Unused(RETRIES_UNUSED)),
    ("task.params", Special::TaskParams),
    ("registry.tlsMount", Special::TlsMount),
    ("tlsConfigs", Special::TlsConfigs),
    ("tls_config", Special::Tls13),
    ("servicecenter.tls_config", Special::Tls13),
    ("log_file", Special::Unused(NO_EFFECT)),
    ("enable_compression", Special::Unused(NO_EFFECT)),
    ("auto_sync", Special::Unused(NO_EFFECT)),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskParam {
    key: String,
    value: Scalar,
}

/// The value of a special key, as read.
#[derive(Debug)]
enum SpecialValue {
    TlsMount(TlsMount),
    TlsConfigs(Vec<TlsConfig>),
    Tls13(TlsConfig13),
    JoinEnabled(bool),
    TaskParams(Vec<TaskParam>),
    /// Given; the text says why it does nothing.
    Unused(&'static str),
}

// --- The file's shape, built from the table ---

/// What the file may hold at one key.
#[derive(Debug)]
enum Node {
    /// A setting's value (a table key); `list` also takes a YAML sequence.
    Value {
        list: bool,
    },
    /// Further keys.
    Section(Section),
    Special(Special),
}

/// The keys of one mapping.
#[derive(Debug, Default)]
struct Section {
    /// Key names in declaration order, for the "expected one of" of an unknown key.
    names: Vec<&'static str>,
    /// `(name, dotted path, node)`, parallel to `names`.
    entries: Vec<(&'static str, &'static str, Node)>,
}

/// The whole file's shape: every table key and every special key.
#[derive(Debug)]
struct Schema(Section);

static SCHEMA: LazyLock<Schema> = LazyLock::new(Schema::build);

impl Schema {
    fn build() -> Schema {
        let mut root = Section::default();
        for spec in SETTINGS {
            // `task.params[interval]` and the like are filled by explicit code.
            for key in spec.file_keys.iter().filter(|k| !k.contains('[')) {
                root.insert(key, key, Node::Value { list: spec.list });
            }
        }
        for (key, special) in SPECIAL_KEYS {
            root.insert(key, key, Node::Special(*special));
        }
        Schema(root)
    }
}

impl Section {
    /// Adds `node` at `rest`, the tail of the dotted `path`, creating sections on the way.
    /// A key declared twice keeps its first node (the table's tests refuse duplicates).
    fn insert(&mut self, path: &'static str, rest: &'static str, node: Node) {
        match rest.split_once('.') {
            None => {
                if !self.names.contains(&rest) {
                    self.names.push(rest);
                    self.entries.push((rest, path, node));
                }
            }
            Some((name, tail)) => {
                let at = match self.names.iter().position(|n| *n == name) {
                    Some(at) => at,
                    None => {
                        let section_path = &path[..path.len() - tail.len() - 1];
                        self.names.push(name);
                        self.entries
                            .push((name, section_path, Node::Section(Section::default())));
                        self.entries.len() - 1
                    }
                };
                if let Node::Section(section) = &mut self.entries[at].2 {
                    section.insert(path, tail, node);
                }
            }
        }
    }
}

/// What a file holds, by dotted key, in the order read.
#[derive(Debug, Default)]
struct Raw {
    values: BTreeMap<&'static str, String>,
    specials: Vec<(&'static str, SpecialValue)>,
}

/// Reads one mapping of the file against its [`Section`]; a null value is an empty mapping.
struct SectionSeed<'r> {
    section: &'static Section,
    raw: &'r mut Raw,
}

impl<'de> DeserializeSeed<'de> for SectionSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for SectionSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some((name, path, node)) = map.next_key_seed(KeySeed(self.section))? {
            if seen.contains(name) {
                return Err(de::Error::duplicate_field(name));
            }
            seen.push(name);
            match node {
                Node::Value { list: false } => {
                    if let Some(Scalar(value)) = map.next_value()? {
                        self.raw.values.insert(path, value);
                    }
                }
                Node::Value { list: true } => {
                    if let Some(List(value)) = map.next_value()? {
                        self.raw.values.insert(path, value);
                    }
                }
                Node::Section(section) => map.next_value_seed(SectionSeed {
                    section,
                    raw: &mut *self.raw,
                })?,
                Node::Special(special) => {
                    let value = match special {
                        Special::TlsMount => {
                            map.next_value::<Option<_>>()?.map(SpecialValue::TlsMount)
                        }
                        Special::TlsConfigs => {
                            map.next_value::<Option<_>>()?.map(SpecialValue::TlsConfigs)
                        }
                        Special::Tls13 => map.next_value::<Option<_>>()?.map(SpecialValue::Tls13),
                        Special::JoinEnabled => map
                            .next_value::<Option<_>>()?
                            .map(SpecialValue::JoinEnabled),
                        Special::TaskParams => {
                            map.next_value::<Option<_>>()?.map(SpecialValue::TaskParams)
                        }
                        Special::Unused(why) => map
                            .next_value::<Option<Scalar>>()?
                            .map(|_| SpecialValue::Unused(why)),
                    };
                    if let Some(value) = value {
                        self.raw.specials.push((path, value));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads one key of a mapping and finds it in its [`Section`]. An unknown key is refused while
/// the key itself is read, so the error carries the key's line rather than the mapping's.
struct KeySeed(&'static Section);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = &'static (&'static str, &'static str, Node);

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = &'static (&'static str, &'static str, Node);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        self.0
            .entries
            .iter()
            .find(|e| e.0 == key)
            .ok_or_else(|| E::unknown_field(key, &self.0.names))
    }
}

/// Reads and parses `path` into a settings layer plus warnings about accepted-but-unused keys.
///
/// # Errors
/// [`ConfigError::File`] when the file cannot be read, is not YAML, has an unknown key or a
/// value of the wrong type; [`ConfigError::Invalid`] for a TLS block that cannot be honoured
/// (a mount naming no `tlsConfigs` entry, rpc TLS without a certificate).
pub fn load(path: &Path) -> Result<(Layer, Vec<String>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })?;
    into_layer(
        parse(&text).map_err(|reason| ConfigError::File {
            path: path.to_owned(),
            reason,
        })?,
        path,
    )
}

/// The layer and warnings of a file holding `text`, as if read from `path`.
#[cfg(test)]
pub(super) fn read_text(text: &str, path: &Path) -> Result<(Layer, Vec<String>), ConfigError> {
    let raw = parse(text).map_err(|reason| ConfigError::File {
        path: path.to_owned(),
        reason,
    })?;
    into_layer(raw, path)
}

/// Reads the file's text against the [`Schema`].
fn parse(text: &str) -> Result<Raw, String> {
    let mut raw = Raw::default();
    // An empty file (or one holding only comments) is a valid, empty configuration.
    if !text.trim().is_empty() {
        SectionSeed {
            section: &SCHEMA.0,
            raw: &mut raw,
        }
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| e.to_string())?;
    }
    Ok(raw)
}

/// Turns what the file holds into settings: first the special keys, then, for every setting of
/// the table, the value of its first key present.
fn into_layer(mut raw: Raw, path: &Path) -> Result<(Layer, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let origin = |key: &str| Origin::File {
        path: path.to_owned(),
        key: key.to_owned(),
    };
    let warn_unused = |warnings: &mut Vec<String>, key: &str, why: &str| {
        warnings.push(format!(
            "{}: {key} is accepted for compatibility but {why}",
            path.display()
        ));
    };

    let mut join_enabled = None;
    let mut tls = TlsBlocks::default();
    for (key, value) in raw.specials {
        match value {
            SpecialValue::TlsMount(mount) => tls.mount(key, mount),
            SpecialValue::Tls13(block) => tls.block13(key, block),
            SpecialValue::TlsConfigs(configs) => tls.configs(key, configs),
            SpecialValue::JoinEnabled(enabled) => join_enabled = Some(enabled),
            SpecialValue::TaskParams(params) => {
                for param in params {
                    if param.key != "interval" {
                        return Err(ConfigError::Invalid {
                            origin: origin(key),
                            value: param.key,
                            reason: "unknown task parameter (the only one is 'interval')".into(),
                        });
                    }
                    raw.values.insert("task.params[interval]", param.value.0);
                }
            }
            SpecialValue::Unused(why) => warn_unused(&mut warnings, key, why),
        }
    }

    // Quirks of plain keys.
    // 1.3 gave the resync interval in seconds.
    if let Some(text) = raw.values.get_mut("ticker_interval")
        && !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit())
    {
        text.push('s');
    }
    // Declared but never used by the original; syncer uses it as --advertise-addr. The
    // original's sample leaves it empty, which means "not set".
    if raw
        .values
        .get("listener.advertiseAddr")
        .is_some_and(|s| s.trim().is_empty())
    {
        raw.values.remove("listener.advertiseAddr");
    }
    // An empty `join.address` is not set; a disabled one is ignored, with a warning (the 1.4
    // sample disables joining but keeps an address).
    if raw
        .values
        .get("join.address")
        .is_some_and(|s| s.trim().is_empty())
    {
        raw.values.remove("join.address");
    }
    if join_enabled == Some(false)
        && let Some(address) = raw.values.remove("join.address")
    {
        warnings.push(format!(
            "{}: join.enabled is false, so join.address '{address}' is not used",
            path.display()
        ));
    }

    let mut layer = Layer::default();
    for spec in SETTINGS {
        if let Some((key, value)) = spec
            .file_keys
            .iter()
            .find_map(|key| raw.values.get(key).map(|value| (key, value)))
        {
            layer.set(spec.id, value.clone(), origin(key));
        }
    }
    let registry_addresses = ["registry.address", "servicecenter.addr"]
        .iter()
        .find_map(|key| raw.values.get(key));
    tls.apply(
        path,
        registry_addresses.map(String::as_str),
        &mut layer,
        &mut warnings,
    )?;
    Ok((layer, warnings))
}

#[cfg(test)]
mod tests {
    use super::super::settings::Id;
    use super::*;

    /// The layer and warnings of a file holding `text`.
    fn read(text: &str) -> Result<(Layer, Vec<String>), ConfigError> {
        read_text(text, Path::new("t.yaml"))
    }

    /// `key: value` as nested YAML (`a.b` becomes `a:\n  b: value`).
    fn nested(key: &str, value: &str) -> String {
        if key == "task.params[interval]" {
            return format!("task:\n  params:\n    - key: interval\n      value: {value}\n");
        }
        let mut out = String::new();
        let parts: Vec<&str> = key.split('.').collect();
        for (depth, part) in parts.iter().enumerate() {
            out.push_str(&"  ".repeat(depth));
            out.push_str(part);
            out.push(':');
            out.push(if depth + 1 == parts.len() { ' ' } else { '\n' });
        }
        out.push_str(value);
        out.push('\n');
        out
    }

    #[test]
    fn every_file_key_of_the_table_sets_its_setting() {
        for spec in SETTINGS {
            for key in spec.file_keys {
                let (layer, _) = read(&nested(key, "x1")).unwrap_or_else(|e| panic!("{key}: {e}"));
                let setting = layer
                    .get(spec.id)
                    .unwrap_or_else(|| panic!("{key} does not set {}", spec.name));
                assert_eq!(setting.value, "x1", "{key}");
                assert_eq!(setting.origin.to_string(), format!("{key} in t.yaml"));
                assert_eq!(
                    layer.iter().count(),
                    1,
                    "{key} sets more than {}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn the_first_key_of_a_setting_wins() {
        let (layer, _) = read(
            "servicecenter:\n  addr: 10.0.0.1:30100\nregistry:\n  address: 10.0.0.2:30100\n\
             ticker_interval: 45\ntask:\n  params:\n    - key: interval\n      value: 1m\n",
        )
        .unwrap();
        assert_eq!(layer.get(Id::ScAddr).unwrap().value, "10.0.0.2:30100");
        assert_eq!(layer.get(Id::ResyncInterval).unwrap().value, "1m");
        let (layer, _) = read("ticker_interval: 45\n").unwrap();
        assert_eq!(layer.get(Id::ResyncInterval).unwrap().value, "45s");
    }

    #[test]
    fn lists_are_sequences_or_comma_separated() {
        let (layer, _) = read("etcd:\n  endpoints: [a:1, b:2]\njoin_addr: c:3,d:4\n").unwrap();
        assert_eq!(layer.get(Id::EtcdEndpoints).unwrap().value, "a:1,b:2");
        assert_eq!(layer.get(Id::JoinAddr).unwrap().value, "c:3,d:4");
        let err = read("listener:\n  bindAddr: [1, 2]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listener.bindAddr"), "{err}");
    }

    #[test]
    fn unknown_and_repeated_keys_are_refused_with_their_line() {
        let err = read("mode: single\nlistener:\n  bindAdr: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bindAdr`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        // A key further down a section is named at its own line, not the section's first.
        let err = read("clusterMode:\n  size: 2\n  leader_lease: 3s\n  foo: 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clusterMode: unknown field `foo`") && err.contains("line 4"),
            "{err}"
        );
        let err = read("mode: single\nmode: cluster\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode"), "{err}");
    }

    #[test]
    fn empty_sections_and_values_are_not_set() {
        let (layer, warnings) = read("listener:\nnode:\njoin:\n  address: ''\n").unwrap();
        assert_eq!(layer.iter().count(), 0);
        assert!(warnings.is_empty());
    }

    #[test]
    fn special_keys_are_handled_by_their_code() {
        let (layer, warnings) = read(
            "join_addr: 10.0.0.1\njoin:\n  enabled: false\n  address: 10.0.0.2\n  retryMax: 3\n\
             log_file: x.log\nlistener:\n  advertiseAddr: ''\n  tlsMount:\n    enabled: false\n    name: s\n",
        )
        .unwrap();
        // A disabled join.address leaves the 1.3 key.
        assert_eq!(layer.get(Id::JoinAddr).unwrap().value, "10.0.0.1");
        assert!(layer.get(Id::AdvertiseAddr).is_none());
        let all = warnings.join("\n");
        for needle in [
            "join.enabled is false",
            "join.retryMax is accepted for compatibility",
            "log_file is accepted for compatibility",
            "listener.tlsMount.name is not used while listener.tlsMount.enabled is not true",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
        let err = read("task:\n  params:\n    - key: speed\n      value: 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("task.params") && err.contains("speed"),
            "{err}"
        );
    }
}
