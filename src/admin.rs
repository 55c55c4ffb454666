//! The admin HTTP endpoint: `GET /health` and `GET /metrics` (Prometheus text format).
//!
//! `/health` answers `ok`, `degraded` (200: the node works, but something needs the
//! operator: a cluster name claimed by members serving different registries, which no data
//! centre imports while it lasts; services of other data centres whose local service the
//! registry refuses or does not create, listed under `services` with the reason; the
//! periodic inspection's alarm, under `inspection`) or `stopping` (503).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::gossip::GossipHandle;
use crate::rpc::proto::NodeInfo;
use crate::sync::{SyncMetrics, peers};
use crate::telemetry::Metrics;

struct AdminState {
    info: NodeInfo,
    metrics: Metrics,
    /// The pool, for the names in conflict.
    gossip: GossipHandle,
    /// The engine's troubles: the services of other data centres whose copies' local
    /// service is in trouble, and the inspection alarm.
    sync: SyncMetrics,
    /// Cancelled when the node begins to shut down; `/health` then answers 503.
    stopping: CancellationToken,
}

/// How long the requests in flight may take once `shutdown` is cancelled. The server waits
/// for the requests it is reading or answering; one a client never finishes (a stalled
/// scraper or probe) must not hold the node's stop, so the connections left are dropped then.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Most services named in `/health`'s reason (all are listed under `services`).
const REASON_SERVICES: usize = 10;

/// Serves the admin endpoint on `listener` until `shutdown` is cancelled, then finishes the
/// requests in flight for up to [`DRAIN_TIMEOUT`].
///
/// # Errors
/// When accepting connections fails.
pub async fn serve(
    listener: TcpListener,
    info: NodeInfo,
    metrics: Metrics,
    gossip: GossipHandle,
    sync: SyncMetrics,
    stopping: CancellationToken,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(AdminState {
        info,
        metrics,
        gossip,
        sync,
        stopping,
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        served = server => served,
        () = drain_deadline => {
            warn!(timeout = ?DRAIN_TIMEOUT, "admin requests still unfinished at the drain deadline; closing their connections");
            Ok(())
        }
    }
}

async fn health(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let conflicts: Vec<String> = state
        .gossip
        .members()
        .await
        .map(|members| peers::conflicts(&members).into_iter().collect())
        .unwrap_or_default();
    let services = state.sync.service_failures().list();
    let inspection = state.sync.inspect_alarm();
    let (code, status) = if state.stopping.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if !conflicts.is_empty() || !services.is_empty() || inspection.is_some() {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let mut body = serde_json::json!({
        "status": status,
        "node": state.info.name,
        "cluster": state.info.cluster_name,
        "mode": state.info.mode,
        "version": state.info.version,
    });
    let mut reasons = Vec::new();
    if !conflicts.is_empty() {
        body["conflicts"] = serde_json::json!(conflicts);
        reasons.push(format!(
            "cluster name claimed by members serving different registries: {}; no data centre imports it until the conflict ends (give each data centre its own --cluster-name)",
            conflicts.join(", ")
        ));
    }
    if !services.is_empty() {
        let named: Vec<String> = services
            .iter()
            .take(REASON_SERVICES)
            .map(|(origin, service, reason)| format!("{origin} {service} ({reason})"))
            .collect();
        let more = services.len().saturating_sub(REASON_SERVICES);
        reasons.push(format!(
            "services of other data centres not fully mirrored: {}{}; the others keep syncing (see the log and syncer_sync_service_failures_total)",
            named.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
        body["services"] = serde_json::Value::Array(
            services
                .iter()
                .map(|(origin, service, reason)| {
                    serde_json::json!({ "origin": origin, "service": service, "reason": reason })
                })
                .collect(),
        );
    }
    if let Some(alarm) = inspection {
        body["inspection"] = serde_json::json!(alarm);
        reasons.push(alarm);
    }
    if !reasons.is_empty() {
        body["reason"] = serde_json::json!(reasons.join("; "));
    }
    (code, axum::Json(body))
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
