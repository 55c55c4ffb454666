//! `/version`, `/health` and the admin endpoints (reference §1.5, §5.2).
//!
//! The dump is the only call that returns every tenant's services and instances; it mirrors
//! SC's cache as etcd key/value pairs (`{key, rev, value, cluster}`), with the emulator's
//! revision counter as `rev`. Only `default/default` may call it.

use std::collections::BTreeMap;

use axum::response::Response;
use serde::Serialize;
use serde_json::json;

use super::errors::{self, ScError};
use super::http::{Ctx, Reply, json_ok, json_ok_raw};
use super::model::{DependencyValue, MicroService, MicroServiceInstance, MicroServiceKey, StrMap};
use super::state::{DEFAULT_TENANT, SC_APP_ID, SC_ENVIRONMENT, SC_SERVICE_NAME, index_key};

/// Name of the only backend cluster.
const CLUSTER: &str = "default";
/// SC's `apiVersion`.
const API_VERSION: &str = "4.0.0";

/// Go's `GOARCH` spelling of the build architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// `version.Set`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionSet {
    version: String,
    build_tag: &'static str,
    go_version: &'static str,
    os: &'static str,
    arch: &'static str,
}

fn version_info(ctx: &Ctx) -> VersionSet {
    VersionSet {
        version: ctx.reg.config.version.clone(),
        build_tag: "syncer-dev-registry",
        go_version: "none",
        os: std::env::consts::OS,
        arch: go_arch(),
    }
}

/// `proto.ServerConfig` with the shipped `app.conf` values.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerConfig {
    max_header_bytes: i64,
    max_body_bytes: usize,
    read_header_timeout: &'static str,
    read_timeout: &'static str,
    idle_timeout: &'static str,
    write_timeout: &'static str,
    #[serde(rename = "limitTTLUnit")]
    limit_ttl_unit: &'static str,
    limit_connections: i64,
    #[serde(rename = "limitIPLookup")]
    limit_ip_lookup: &'static str,
    ssl_enabled: &'static str,
    ssl_min_version: &'static str,
    ssl_verify_peer: &'static str,
    ssl_ciphers: &'static str,
    #[serde(rename = "enablePProf")]
    enable_pprof: bool,
    enable_cache: bool,
    #[serde(rename = "enableRBAC")]
    enable_rbac: bool,
    plugins: BTreeMap<String, String>,
    self_register: bool,
    service_clear_enabled: bool,
    service_clear_interval: i64,
    #[serde(rename = "serviceTTL")]
    service_ttl: i64,
    #[serde(rename = "cacheTTL")]
    cache_ttl: i64,
    schema_disable: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionResponse {
    #[serde(flatten)]
    set: VersionSet,
    api_version: &'static str,
    config: ServerConfig,
}

/// `GET /v4/{project}/registry/version`: no trailing newline, as SC writes it.
pub fn version(ctx: &Ctx) -> Response {
    json_ok_raw(&VersionResponse {
        set: version_info(ctx),
        api_version: API_VERSION,
        config: ServerConfig {
            max_header_bytes: 32768,
            max_body_bytes: super::http::MAX_BODY_BYTES,
            read_header_timeout: "60s",
            read_timeout: "60s",
            idle_timeout: "60s",
            write_timeout: "60s",
            limit_ttl_unit: "s",
            limit_connections: 0,
            limit_ip_lookup: "RemoteAddr,X-Forwarded-For,X-Real-IP",
            ssl_enabled: "false",
            ssl_min_version: "TLSv1.2",
            ssl_verify_peer: "false",
            ssl_ciphers: "",
            enable_pprof: false,
            enable_cache: true,
            enable_rbac: false,
            plugins: BTreeMap::new(),
            self_register: ctx.reg.config.self_register,
            service_clear_enabled: false,
            service_clear_interval: 0,
            service_ttl: 0,
            cache_ttl: 0,
            schema_disable: false,
        },
    })
}

/// `GET /v4/{project}/registry/health`: SC's own instances as stored (SC 2.x: with its inner
/// properties, from which clients learn what SC adds to every instance).
pub fn health(ctx: &Ctx) -> Reply {
    let store = ctx.reg.lock();
    let t = store.tenant(DEFAULT_TENANT);
    let sc_id = t.and_then(|t| {
        t.service_id_by_key(
            SC_ENVIRONMENT,
            SC_APP_ID,
            SC_SERVICE_NAME,
            "",
            &ctx.reg.config.version,
        )
    });
    let (Some(t), Some(sc_id)) = (t, sc_id) else {
        return Err(ScError::new(
            errors::SERVICE_NOT_EXISTS,
            "ServiceCenter's serviceID not exist.",
        ));
    };
    let instances: Vec<MicroServiceInstance> = t
        .cached_instances(sc_id)
        .map(|e| e.instance.clone())
        .collect();
    Ok(json_ok(&super::model::InstancesResponse { instances }))
}

/// `GET /v4/{project}/admin/clusters`.
pub fn clusters(ctx: &Ctx) -> Response {
    json_ok(&json!({ "clusters": { CLUSTER: [ctx.reg.listen.to_string()] } }))
}

/// One cached key/value pair.
#[derive(Serialize)]
struct Kv<V: Serialize> {
    key: String,
    rev: i64,
    value: V,
    cluster: &'static str,
}

impl<V: Serialize> Kv<V> {
    fn new(key: String, rev: i64, value: V) -> Self {
        Kv {
            key,
            rev,
            value,
            cluster: CLUSTER,
        }
    }
}

/// `model.Cache`: empty sections are left out.
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Cache<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    services: Vec<Kv<&'a MicroService>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    service_indexes: Vec<Kv<&'a str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    service_aliases: Vec<Kv<&'a str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    service_tags: Vec<Kv<&'a StrMap>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dependency_rules: Vec<Kv<DependencyValue<'a>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    instances: Vec<Kv<&'a MicroServiceInstance>>,
}

/// Dependency rule key (`GenerateServiceDependencyRuleKey`), consumer (`c`) or provider (`p`).
fn dep_rule_key(kind: &str, tenant: &str, k: &MicroServiceKey) -> String {
    if k.service_name == "*" {
        format!("/cse-sr/ms/dep-rules/{tenant}/{kind}/{}/*", k.environment)
    } else {
        format!(
            "/cse-sr/ms/dep-rules/{tenant}/{kind}/{}/{}/{}/{}",
            k.environment, k.app_id, k.service_name, k.version
        )
    }
}

/// `model.DumpResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DumpResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<VersionSet>,
    #[serde(rename = "appConf", skip_serializing_if = "Option::is_none")]
    app_conf: Option<BTreeMap<&'static str, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environments: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<Cache<'a>>,
}

/// `GET /v4/{project}/admin/dump[?options=cache|info|config|env|all]`.
pub fn dump(ctx: &Ctx) -> Reply {
    if ctx.tenant != DEFAULT_TENANT {
        return Err(ScError::new(errors::FORBIDDEN, "Required admin permission"));
    }
    let raw = ctx.q("options").trim();
    let options: Vec<&str> = if raw.is_empty() {
        vec!["cache"]
    } else {
        raw.split(',').collect()
    };
    let all = options.contains(&"all");
    let want = |o: &str| all || options.contains(&o);
    let store = ctx.reg.read_view();
    // Provider-side rule entries (`/p/` keys): provider rule -> consumers, newest rev.
    let mut provider_rules: BTreeMap<String, (Vec<MicroServiceKey>, i64)> = BTreeMap::new();
    for (tenant, t) in &store.tenants {
        for rule in t.dep_rules.values() {
            for p in &rule.providers {
                let entry = provider_rules
                    .entry(dep_rule_key("p", tenant, p))
                    .or_default();
                entry.0.push(rule.consumer.clone());
                entry.1 = entry.1.max(rule.rev);
            }
        }
    }
    let mut body = DumpResponse {
        info: want("info").then(|| version_info(ctx)),
        app_conf: want("config").then(|| {
            BTreeMap::from([
                ("httpaddr", ctx.reg.listen.ip().to_string()),
                ("httpport", ctx.reg.listen.port().to_string()),
                ("runmode", "dev".to_owned()),
                (
                    "self_register",
                    if ctx.reg.config.self_register {
                        "1"
                    } else {
                        "0"
                    }
                    .to_owned(),
                ),
                ("uuid_plugin", "context".to_owned()),
                ("max_body_bytes", super::http::MAX_BODY_BYTES.to_string()),
            ])
        }),
        environments: want("env").then(|| std::env::vars().collect()),
        cache: None,
    };
    if want("cache") {
        let mut cache = Cache::default();
        for (tenant, t) in &store.tenants {
            for e in t.services.values() {
                let s = &e.service;
                cache.services.push(Kv::new(
                    format!("/cse-sr/ms/files/{tenant}/{}", s.service_id),
                    e.rev,
                    s,
                ));
                cache.service_indexes.push(Kv::new(
                    index_key(
                        tenant,
                        &s.environment,
                        &s.app_id,
                        &s.service_name,
                        &s.version,
                    ),
                    e.rev,
                    &s.service_id,
                ));
                if !s.alias.is_empty() {
                    cache.service_aliases.push(Kv::new(
                        format!(
                            "/cse-sr/ms/alias/{tenant}/{}/{}/{}/{}",
                            s.environment, s.app_id, s.alias, s.version
                        ),
                        e.rev,
                        &s.service_id,
                    ));
                }
                if !e.tags.is_empty() {
                    cache.service_tags.push(Kv::new(
                        format!("/cse-sr/ms/tags/{tenant}/{}", s.service_id),
                        e.tags_rev,
                        &e.tags,
                    ));
                }
            }
            for rule in t.dep_rules.values() {
                cache.dependency_rules.push(Kv::new(
                    dep_rule_key("c", tenant, &rule.consumer),
                    rule.rev,
                    DependencyValue {
                        dependency: &rule.providers,
                    },
                ));
            }
            for ((sid, iid), e) in &t.instances {
                cache.instances.push(Kv::new(
                    format!("/cse-sr/inst/files/{tenant}/{sid}/{iid}"),
                    e.rev,
                    &e.instance,
                ));
            }
        }
        for (key, (consumers, rev)) in &provider_rules {
            cache.dependency_rules.push(Kv::new(
                key.clone(),
                *rev,
                DependencyValue {
                    dependency: consumers,
                },
            ));
        }
        body.cache = Some(cache);
    }
    Ok(json_ok(&body))
}
