//! The governance listing `GET /v4/{project}/govern/microservices` (SC's UI API), of which the
//! emulator serves what a client can rely on: `options=statistics` alone, the counts of one
//! tenant, and the plain service list otherwise.
//!
//! The reference (§2.3) leaves this route out; the facts here are read from SC's source, the
//! same in 1.4.8 (`server/rest/govern/controller_v4.go`, `service.go`: `statistics`) and 2.x
//! (`server/resource/govern/govern_resource.go`, `datasource/ms_util.go`):
//! - `countOnly` other than `0`, `1` or empty: `400001` `parameter countOnly must be 1 or 0`.
//! - With `statistics` the only option, the answer is `{"statistics":{...}}` alone:
//!   `services.count`: distinct `(environment, appId, serviceName)` of the tenant's service
//!   index (versions folded), SC's shared services left out unless `withShared`;
//!   `services.onlineCount`: those with at least one instance; `instances.count`: instances
//!   of the tenant whose service is counted; `instances.countByDomain`: the domain's
//!   instances whose service id is among the counted ones (so the same number here);
//!   `apps.count`: distinct `appId`s. Zeros are omitted (Go's `omitempty`).
//! - Read from the cache: instances in a real-SC delete check window still count, as in
//!   every other read.
//! - Any other options list the tenant's services as `allServicesDetail[].microService`
//!   without properties and schemas; the optional details (tags, rules, instances, schemas,
//!   dependencies) are not emulated.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::errors::ScError;
use super::http::{Ctx, Reply, json_ok};
use super::model::MicroService;
use super::state::Store;

/// `GET /v4/{project}/govern/microservices`.
pub fn list(ctx: &Ctx) -> Reply {
    let count_only = ctx.q("countOnly");
    if !matches!(count_only, "0" | "1") && !count_only.trim().is_empty() {
        return Err(ScError::invalid("parameter countOnly must be 1 or 0"));
    }
    let options: BTreeSet<&str> = ctx.q("options").split(',').collect();
    let with_shared = matches!(
        ctx.q("withShared").trim().to_ascii_lowercase().as_str(),
        "1" | "true"
    );
    let store = ctx.reg.read_view();
    let statistics = (options.contains("statistics") || options.contains("all"))
        .then(|| statistics(&store, &ctx.tenant, with_shared));
    if options.len() == 1 && statistics.is_some() {
        return Ok(json_ok(&Answer {
            all_services_detail: Vec::new(),
            statistics,
        }));
    }
    let details = store
        .tenant(&ctx.tenant)
        .map(|t| {
            t.services
                .values()
                .map(|e| &e.service)
                .filter(|s| with_shared || !shared(&ctx.tenant, s))
                .map(|s| Detail {
                    micro_service: MicroService {
                        properties: Default::default(),
                        schemas: Vec::new(),
                        ..s.clone()
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json_ok(&Answer {
        all_services_detail: details,
        statistics,
    }))
}

fn shared(tenant: &str, service: &MicroService) -> bool {
    Store::is_shared(tenant, &service.app_id, &service.service_name)
}

/// The counts of `tenant` as SC's `statistics` makes them.
fn statistics(store: &Store, tenant: &str, with_shared: bool) -> Statistics {
    let Some(t) = store.tenant(tenant) else {
        return Statistics::default();
    };
    // Service id → its name key with the version left out.
    let mut names: BTreeMap<&str, (&str, &str, &str)> = BTreeMap::new();
    let mut apps = BTreeSet::new();
    for entry in t.services.values() {
        let s = &entry.service;
        if !with_shared && shared(tenant, s) {
            continue;
        }
        apps.insert(s.app_id.as_str());
        names.insert(
            s.service_id.as_str(),
            (&s.environment, &s.app_id, &s.service_name),
        );
    }
    let distinct: BTreeSet<_> = names.values().collect();
    let mut online = BTreeSet::new();
    let mut instances = 0;
    for (service_id, _) in t.instances.keys() {
        if let Some(name) = names.get(service_id.as_str()) {
            instances += 1;
            online.insert(name);
        }
    }
    Statistics {
        services: Counts {
            count: distinct.len() as i64,
            online_count: online.len() as i64,
        },
        instances: InstanceCounts {
            count: instances,
            count_by_domain: instances,
        },
        apps: AppCounts {
            count: apps.len() as i64,
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    all_services_detail: Vec<Detail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statistics: Option<Statistics>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    micro_service: MicroService,
}

#[derive(Serialize, Default)]
struct Statistics {
    services: Counts,
    instances: InstanceCounts,
    apps: AppCounts,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Counts {
    #[serde(skip_serializing_if = "is_zero")]
    count: i64,
    #[serde(skip_serializing_if = "is_zero")]
    online_count: i64,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct InstanceCounts {
    #[serde(skip_serializing_if = "is_zero")]
    count: i64,
    #[serde(skip_serializing_if = "is_zero")]
    count_by_domain: i64,
}

#[derive(Serialize, Default)]
struct AppCounts {
    #[serde(skip_serializing_if = "is_zero")]
    count: i64,
}
