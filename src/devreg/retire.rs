//! SC 2.x's retire job (`server/job/disco/service.go`, `datasource/etcd/retire.go` of
//! v2.2.0): per service name (environment, appId, serviceName of the index key) keep the
//! `reserve` highest versions (default 3) and delete, forcibly, every older version that has
//! no instance. SC runs it daily (`registry.service.retire.cron`, `0 1 * * *`); the emulator
//! runs it every `retire_period` from start, so tests can watch it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::sleep;
use tracing::warn;

use super::services::delete_locked;
use super::state::{DepJob, Registry, Store};
use super::version;

/// `(environment, appId, serviceName)`: a service's index key without the version.
type NameKey<'a> = (&'a str, &'a str, &'a str);
/// `(version, serviceId)` of one version.
type Version<'a> = (&'a str, &'a str);

/// `GetRetireServiceIDs` + `FilterNoInstance`: `(tenant, serviceId)` of the versions to delete.
fn retire_candidates(store: &Store, reserve: usize) -> Vec<(String, String)> {
    let mut victims = Vec::new();
    for (tenant, t) in &store.tenants {
        let mut by_name: BTreeMap<NameKey, Vec<Version>> = BTreeMap::new();
        for e in t.services.values() {
            let s = &e.service;
            by_name
                .entry((&s.environment, &s.app_id, &s.service_name))
                .or_default()
                .push((&s.version, &s.service_id));
        }
        for mut versions in by_name.into_values() {
            if versions.len() <= reserve {
                continue;
            }
            // Highest version first (`serviceUtil.Larger`).
            versions.sort_by_key(|(v, _)| std::cmp::Reverse(version::parse(v)));
            for (_, id) in versions.into_iter().skip(reserve) {
                if t.cached_instances(id).next().is_none() {
                    victims.push((tenant.clone(), id.to_owned()));
                }
            }
        }
    }
    victims
}

/// One run of the job on a locked store; returns the dependency clean-ups to submit.
pub fn retire(store: &mut Store, reserve: usize) -> Vec<DepJob> {
    let victims = retire_candidates(store, reserve);
    if victims.is_empty() {
        return Vec::new();
    }
    warn!(count = victims.len(), "start retire microservices");
    let jobs: Vec<DepJob> = victims
        .iter()
        .filter_map(|(tenant, id)| delete_locked(store, tenant, id, true).ok())
        .collect();
    warn!(count = jobs.len(), "microservices retired");
    jobs
}

/// Runs [`retire`] every `retire_period` until the registry stops.
pub async fn retire_loop(reg: Arc<Registry>) {
    let period = reg.config.retire_period;
    loop {
        tokio::select! {
            biased;
            () = reg.shutdown.cancelled() => break,
            () = sleep(period) => {}
        }
        let jobs = retire(&mut reg.lock(), reg.config.retire_reserve);
        reg.submit_dependencies(jobs).await;
    }
}
