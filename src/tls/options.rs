//! The protocol settings of a TLS configuration: the oldest version allowed and the cipher
//! suites, by IANA name, mapped onto rustls' suites (ring provider).
//!
//! rustls speaks TLS 1.2 and 1.3 with AEAD suites only. A name of a real TLS suite that
//! rustls does not have (CBC suites, RSA key exchange such as the original Syncer's sample
//! `TLS_RSA_WITH_AES_256_GCM_SHA384`) is skipped with a warning, as long as a usable suite
//! remains; a name that is no TLS suite at all is an error.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring as provider;
use rustls::{CipherSuite, SupportedCipherSuite, SupportedProtocolVersion};

/// The oldest TLS version a configuration allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl MinVersion {
    /// `1.2` or `1.3`, also spelled `TLSv1.2`/`TLSv1.3` (the original's YAML) or `TLS1.2`.
    ///
    /// # Errors
    /// The reason, naming what is accepted.
    pub fn parse(text: &str) -> Result<MinVersion, String> {
        let t = text.trim().to_ascii_lowercase();
        let t = t
            .strip_prefix("tlsv")
            .or_else(|| t.strip_prefix("tls"))
            .unwrap_or(&t);
        match t {
            "1.2" => Ok(MinVersion::Tls12),
            "1.3" => Ok(MinVersion::Tls13),
            "1.0" | "1.1" => Err(
                "TLS 1.0 and 1.1 are not supported (broken and deprecated); use 1.2 or 1.3".into(),
            ),
            _ => Err("expected a TLS version: 1.2 or 1.3 (TLSv1.2, TLSv1.3)".into()),
        }
    }

    /// The versions a configuration with this minimum speaks.
    pub fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: &[&SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY_13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => BOTH,
            MinVersion::Tls13 => ONLY_13,
        }
    }
}

impl fmt::Display for MinVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        })
    }
}

/// The minimum version and the cipher suites of one configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    pub min_version: MinVersion,
    /// The suites in order of preference; empty: rustls' defaults for the versions allowed.
    pub suites: Vec<CipherSuite>,
}

/// What a cipher list resolves to: the options and warnings to log at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub options: TlsOptions,
    pub warnings: Vec<String>,
}

/// The rustls suite of `suite`, if the ring provider has it.
fn supported(suite: CipherSuite) -> Option<SupportedCipherSuite> {
    provider::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .find(|s| s.suite() == suite)
}

fn is_tls13(suite: SupportedCipherSuite) -> bool {
    matches!(suite, SupportedCipherSuite::Tls13(_))
}

/// The TLS suite named `name`: its IANA name (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`,
/// `TLS_AES_128_GCM_SHA256`), rustls' (`TLS13_AES_128_GCM_SHA256`) or Go's
/// (`TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305`), in any case.
pub fn suite_by_name(name: &str) -> Option<CipherSuite> {
    let upper = name.trim().to_ascii_uppercase();
    let mut candidates = vec![upper.clone()];
    if let Some(rest) = upper.strip_prefix("TLS_")
        && !rest.contains("_WITH_")
    {
        // IANA names TLS 1.3 suites TLS_AES_128_GCM_SHA256; rustls TLS13_AES_128_GCM_SHA256.
        candidates.push(format!("TLS13_{rest}"));
    }
    if upper.ends_with("_CHACHA20_POLY1305") {
        candidates.push(format!("{upper}_SHA256"));
    }
    (0..=u16::MAX).map(CipherSuite::from).find(|suite| {
        suite
            .as_str()
            .is_some_and(|known| candidates.iter().any(|c| c.eq_ignore_ascii_case(known)))
    })
}

/// Resolves the cipher names of `setting` (e.g. `--tls-ciphers`) for `min_version`.
///
/// # Errors
/// A name that is no TLS suite, or a list that leaves no suite rustls can use with the
/// versions allowed.
pub fn resolve(
    setting: &str,
    min_version: MinVersion,
    names: &[String],
) -> Result<Resolved, String> {
    let mut suites = Vec::new();
    let mut skipped = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let Some(suite) = suite_by_name(name) else {
            return Err(format!(
                "'{name}' is not a TLS cipher suite name (IANA names such as \
                 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_AES_128_GCM_SHA256; supported: {})",
                supported_names()
            ));
        };
        match supported(suite) {
            Some(s) if min_version == MinVersion::Tls13 && !is_tls13(s) => {
                skipped.push(format!(
                    "{name} (TLS 1.2 only, and the minimum version is 1.3)"
                ));
            }
            Some(_) => {
                if !suites.contains(&suite) {
                    suites.push(suite);
                }
            }
            None => skipped.push(format!("{name} (not supported by syncer's TLS library)")),
        }
    }
    let mut warnings = Vec::new();
    if suites.is_empty() {
        if names.iter().all(|n| n.trim().is_empty()) {
            return Ok(Resolved {
                options: TlsOptions {
                    min_version,
                    suites,
                },
                warnings,
            });
        }
        return Err(format!(
            "no usable cipher suite is left for TLS {min_version} and later: skipped {}; \
             supported: {}",
            skipped.join(", "),
            supported_names()
        ));
    }
    if !skipped.is_empty() {
        warnings.push(format!(
            "{setting}: skipped cipher suites {}",
            skipped.join(", ")
        ));
    }
    let has13 = suites.iter().filter_map(|s| supported(*s)).any(is_tls13);
    let has12 = suites
        .iter()
        .filter_map(|s| supported(*s))
        .any(|s| !is_tls13(s));
    if min_version == MinVersion::Tls12 && !(has12 && has13) {
        let (only, missing) = if has13 {
            ("1.3", "1.2")
        } else {
            ("1.2", "1.3")
        };
        warnings.push(format!(
            "{setting}: the cipher suites cover TLS {only} only, so TLS {missing} cannot be \
             negotiated; add suites of TLS {missing} to allow it"
        ));
    }
    Ok(Resolved {
        options: TlsOptions {
            min_version,
            suites,
        },
        warnings,
    })
}

/// The IANA names of the suites rustls has, for messages.
fn supported_names() -> String {
    provider::ALL_CIPHER_SUITES
        .iter()
        .map(|s| iana_name(s.suite()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The IANA name of `suite` (`TLS13_` of rustls becomes `TLS_`).
pub fn iana_name(suite: CipherSuite) -> String {
    let name = suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_owned);
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

impl TlsOptions {
    /// The crypto provider of these options: ring with the chosen suites (rustls' defaults
    /// when none were chosen, minus those of versions below the minimum).
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let mut p = provider::default_provider();
        if !self.suites.is_empty() {
            p.cipher_suites = self.suites.iter().filter_map(|s| supported(*s)).collect();
        }
        if self.min_version == MinVersion::Tls13 {
            p.cipher_suites.retain(|s| is_tls13(*s));
        }
        Arc::new(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_versions_in_both_spellings() {
        assert_eq!(MinVersion::parse("1.2"), Ok(MinVersion::Tls12));
        assert_eq!(MinVersion::parse(" TLSv1.3 "), Ok(MinVersion::Tls13));
        assert_eq!(MinVersion::parse("tlsv1.2"), Ok(MinVersion::Tls12));
        assert_eq!(MinVersion::parse("TLS1.3"), Ok(MinVersion::Tls13));
        let err = MinVersion::parse("1.1").expect_err("1.1");
        assert!(err.contains("not supported"), "{err}");
        let err = MinVersion::parse("1.4").expect_err("1.4");
        assert!(err.contains("1.2 or 1.3"), "{err}");
    }

    #[test]
    fn finds_suites_by_iana_rustls_and_go_names() {
        assert_eq!(
            suite_by_name("TLS_AES_128_GCM_SHA256"),
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        assert_eq!(
            suite_by_name("tls13_aes_256_gcm_sha384"),
            Some(CipherSuite::TLS13_AES_256_GCM_SHA384)
        );
        assert_eq!(
            suite_by_name("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"),
            Some(CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
        );
        assert_eq!(
            suite_by_name("TLS_RSA_WITH_AES_256_GCM_SHA384"),
            Some(CipherSuite::TLS_RSA_WITH_AES_256_GCM_SHA384)
        );
        assert_eq!(suite_by_name("TLS_NO_SUCH_SUITE"), None);
    }

    #[test]
    fn real_suites_rustls_lacks_are_skipped_with_a_warning() {
        // The original Syncer's sample list.
        let r = resolve(
            "--tls-ciphers",
            MinVersion::Tls12,
            &names(&[
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            ]),
        )
        .expect("usable");
        assert_eq!(
            r.options.suites,
            vec![CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
        );
        assert!(
            r.warnings[0].contains("TLS_RSA_WITH_AES_256_GCM_SHA384"),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings[0].contains("AES_128_CBC_SHA256"),
            "{:?}",
            r.warnings
        );
        // Only TLS 1.2 suites: TLS 1.3 cannot be negotiated.
        assert!(r.warnings[1].contains("TLS 1.2 only"), "{:?}", r.warnings);
    }

    #[test]
    fn an_unknown_name_is_an_error() {
        let err = resolve(
            "--tls-ciphers",
            MinVersion::Tls12,
            &names(&["TLS_FAST_AND_SAFE"]),
        )
        .expect_err("unknown");
        assert!(
            err.contains("'TLS_FAST_AND_SAFE' is not a TLS cipher suite"),
            "{err}"
        );
        assert!(err.contains("TLS_AES_128_GCM_SHA256"), "{err}");
    }

    #[test]
    fn a_list_without_a_usable_suite_is_an_error() {
        let err = resolve(
            "--tls-ciphers",
            MinVersion::Tls13,
            &names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]),
        )
        .expect_err("only 1.2 suites with 1.3");
        assert!(err.contains("no usable cipher suite"), "{err}");
        let err = resolve(
            "--tls-ciphers",
            MinVersion::Tls12,
            &names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]),
        )
        .expect_err("only unsupported");
        assert!(
            err.contains("not supported by syncer's TLS library"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_list_keeps_the_defaults() {
        let r = resolve("--tls-ciphers", MinVersion::Tls13, &[]).expect("defaults");
        assert!(r.options.suites.is_empty() && r.warnings.is_empty());
        let p = r.options.provider();
        assert!(p.cipher_suites.iter().all(|s| is_tls13(*s)));
        let p = TlsOptions::default().provider();
        assert_eq!(p.cipher_suites.len(), provider::ALL_CIPHER_SUITES.len());
    }

    #[test]
    fn tls13_only_suites_with_min_12_warn() {
        let r = resolve(
            "--tls-ciphers",
            MinVersion::Tls12,
            &names(&["TLS_AES_256_GCM_SHA384"]),
        )
        .expect("usable");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("TLS 1.3 only"), "{:?}", r.warnings);
        assert_eq!(r.options.provider().cipher_suites.len(), 1);
    }
}
