//! The periodic inspection (`--inspect-interval`, `--inspect-alarm-count`): the active
//! syncer of a data centre audits its own copies against the origins, as `syncer diff` does
//! for the whole pool, and tells: `syncer_inspect_drift{kind}`, `syncer_inspect_failures_total`,
//! an alarm in the log after N consecutive inspections with the same drift, and `/health`
//! degraded while it lasts. It repairs nothing behind the engine's back.
//!
//! Each inspection reads the local registry in full (`SyncHandle::inventory`) with the
//! mapping table (`SyncHandle::mappings`), and each origin's inventory from its active
//! syncer (the peer directory's address, over the rpc link with this node's client TLS), then
//! keeps the findings about this data centre. A finding counts when the previous inspection
//! found it too (changes in flight are not drift).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::{self, Finding, Inventory, Kind};
use crate::rpc::ops;
use crate::rpc::tls::ClientTls;
use crate::store::Mapping;
use crate::sync::SyncHandle;
use crate::sync::status::EntryState;

/// How long the local importers and each origin are given to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Findings named in the alarm's log line and `/health` reason.
const NAMED: usize = 5;

/// The inspection's settings.
#[derive(Debug, Clone)]
pub struct InspectSettings {
    pub interval: Duration,
    pub alarm_count: usize,
    /// This data centre.
    pub cluster: String,
}

/// Runs the inspection every `settings.interval` until `token` is cancelled; a member whose
/// engine does not run (a standby) skips its turn.
pub async fn run(
    settings: InspectSettings,
    sync: SyncHandle,
    tls: Option<ClientTls>,
    token: CancellationToken,
) {
    let metrics = sync.metrics().clone();
    let mut previous: Option<Vec<Finding>> = None;
    let mut same_for = 0usize;
    let mut last: Vec<Finding> = Vec::new();
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
        if !sync.running() {
            previous = None;
            continue;
        }
        let found = match inspect_once(&settings.cluster, &sync, tls.as_ref()).await {
            Ok(found) => found,
            Err(why) => {
                metrics.inspect_failed();
                warn!(reason = %why, "inspection not made");
                continue;
            }
        };
        let persisting = match &previous {
            Some(earlier) => audit::persisting(earlier, found.clone()),
            None => Vec::new(),
        };
        previous = Some(found);
        for kind in Kind::ALL {
            metrics.set_inspect_drift(
                kind.name(),
                persisting.iter().filter(|f| f.kind == kind).count(),
            );
        }
        if persisting.is_empty() {
            if same_for >= settings.alarm_count {
                info!("inspection: the drift is gone");
            }
            same_for = 0;
            metrics.set_inspect_alarm(None);
        } else {
            // The audit sorts its findings, so the same drift is the same keys in order.
            let same = persisting.len() == last.len()
                && persisting
                    .iter()
                    .zip(&last)
                    .all(|(a, b)| a.key() == b.key());
            same_for = if same { same_for + 1 } else { 1 };
            let reason = describe(&persisting, same_for);
            if same_for == settings.alarm_count {
                warn!(findings = persisting.len(), inspections = same_for, detail = %reason, "inspection alarm: the same drift in consecutive inspections");
            } else {
                debug!(
                    findings = persisting.len(),
                    inspections = same_for,
                    "inspection found drift"
                );
            }
            metrics.set_inspect_alarm((same_for >= settings.alarm_count).then_some(reason));
        }
        last = persisting;
    }
}

/// The alarm's text: counts by kind, and the first findings.
fn describe(findings: &[Finding], inspections: usize) -> String {
    let counts: Vec<String> = Kind::ALL
        .iter()
        .filter_map(|k| {
            let n = findings.iter().filter(|f| f.kind == *k).count();
            (n > 0).then(|| format!("{n} {}", k.name()))
        })
        .collect();
    let named: Vec<String> = findings
        .iter()
        .take(NAMED)
        .map(|f| {
            format!(
                "{} of {} {} {}",
                f.kind.name(),
                f.origin,
                f.service,
                f.instance.as_deref().unwrap_or(&f.copies.join(","))
            )
        })
        .collect();
    format!(
        "inspection found the same drift {inspections} times: {} ({}{}); see syncer diff",
        counts.join(", "),
        named.join("; "),
        if findings.len() > NAMED { "; ..." } else { "" }
    )
}

/// One inspection: this data centre's findings.
async fn inspect_once(
    cluster: &str,
    sync: &SyncHandle,
    tls: Option<&ClientTls>,
) -> Result<Vec<Finding>, String> {
    let (snapshot, filter) = sync
        .inventory()
        .await
        .map_err(|e| format!("the local registry: {e}"))?;
    let entries = sync
        .mappings(None, ASK_TIMEOUT)
        .await
        .map_err(|e| format!("the mapping table: {e}"))?;
    let mappings = entries
        .into_iter()
        .filter(|e| e.state != EntryState::Unmapped)
        .map(|e| Mapping {
            origin: e.origin,
            domain: e.tenant.domain,
            project: e.tenant.project,
            origin_service_id: e.origin_service_id,
            origin_instance_id: e.origin_instance_id,
            service_id: e.copy_service_id,
            instance_id: e.copy_instance_id,
            fingerprint: String::new(),
            generation: e.generation,
            updated_ms: e.updated_ms,
        })
        .collect();
    let mut pool = vec![Inventory::new(
        cluster.to_owned(),
        snapshot.services,
        snapshot.instances,
        mappings,
        (*filter).clone(),
    )];
    // Each imported origin's active syncer, from the peer directory (no registry call: the
    // registry was read in full above).
    for origin in sync.origins().iter().filter(|o| !o.conflict) {
        let Some(addr) = origin.state.peer else {
            return Err(format!("no active syncer of {} is known", origin.origin));
        };
        let answer = ops::inventory(&addr.to_string(), ASK_TIMEOUT, tls)
            .await
            .map_err(|e| format!("{}: {e}", origin.origin))?;
        let filter = answer.filter();
        pool.push(Inventory::new(
            answer.cluster,
            answer.services,
            answer.instances,
            Vec::new(),
            filter,
        ));
    }
    Ok(audit::audit(&pool)
        .into_iter()
        .filter(|f| f.dc == cluster)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_names_counts_and_the_first_findings() {
        let finding = |kind, instance: &str| Finding {
            kind,
            origin: "dc1".into(),
            dc: "dc2".into(),
            service: "shop/orders".into(),
            instance: Some(instance.into()),
            copies: vec!["syncer-x".into()],
            detail: String::new(),
        };
        let text = describe(
            &[
                finding(Kind::Drift, "a/b/s/i1"),
                finding(Kind::Stale, "a/b/s/i2"),
            ],
            3,
        );
        assert!(
            text.starts_with("inspection found the same drift 3 times: 1 stale, 1 drift"),
            "{text}"
        );
        assert!(text.contains("drift of dc1 shop/orders a/b/s/i1"), "{text}");
        assert!(text.ends_with("see syncer diff"), "{text}");
    }
}
