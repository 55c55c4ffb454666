//! What SC clients must cope with from the emulator's bug-compatible behaviour (issue 15
//! item 3), checked through syncer's own ServiceComb adapter.

use std::time::Duration;

use serde_json::json;
use syncer::devreg::{DevRegistry, DevRegistryConfig};
use syncer::registry::servicecomb::{ServiceComb, ServiceCombConfig};
use syncer::registry::{InstanceRef, Registry, Tenant};
use url::Url;

/// SC looks single instances up by key *prefix*: with only `pfx-10` registered, a batch find
/// of `pfx-1` answers `updated` with `pfx-10`. The adapter's 1.4.8 heartbeat fallback (batch
/// heartbeat `400017`, then a batch find) must still report `pfx-1` as unknown, or the copy
/// is never registered again.
///
/// Failed before the fix, when `heartbeat.rs` read only the `failed` entries of the batch find.
#[tokio::test]
async fn heartbeat_fallback_is_not_fooled_by_a_prefix_hit() {
    let registry = DevRegistry::start(DevRegistryConfig::default())
        .await
        .expect("dev registry");
    let http = reqwest::Client::new();
    let base = format!("{}/v4/default/registry", registry.url());
    let created: serde_json::Value = http
        .post(format!("{base}/microservices"))
        .json(&json!({"service": {"appId": "app", "serviceName": "pfx"}}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("create answer");
    let sid = created["serviceId"].as_str().expect("serviceId").to_owned();
    let status = http
        .post(format!("{base}/microservices/{sid}/instances"))
        .json(&json!({"instance": {"instanceId": "pfx-10", "hostName": "h", "endpoints": ["rest://127.0.0.1:1"]}}))
        .send()
        .await
        .expect("register")
        .status();
    assert_eq!(status, 200);
    let url = Url::parse(&registry.url()).expect("url");
    let adapter = ServiceComb::new(ServiceCombConfig {
        timeout: Duration::from_secs(2),
        ..ServiceCombConfig::new(vec![url])
    })
    .expect("adapter");
    let ghost = InstanceRef {
        tenant: Tenant::default_tenant(),
        service_id: sid,
        instance_id: "pfx-1".into(),
    };
    let report = adapter
        .heartbeat(std::slice::from_ref(&ghost))
        .await
        .expect("heartbeat");
    assert_eq!(report.unknown, vec![ghost]);
    registry.shutdown().await;
}
