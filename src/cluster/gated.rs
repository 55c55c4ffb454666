//! A registry whose writes pass a [`WriteGate`]: the active member of a data centre writes
//! only while its leadership is confirmed. Reads are never gated.
//!
//! The gate is checked before a write and watched during it: the registry client may retry
//! one call on several addresses for seconds, so a write still under way when the gate
//! closes is dropped at that moment (the caller sees [`RegistryError::Unavailable`]). No
//! request of this member is sent after its gate closed.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use super::leader::WriteGate;
use crate::registry::{
    ChangeFeed, HeartbeatReport, Instance, InstanceRef, Refusal, Registry, RegistryError,
    RegistryIdentity, Service, Snapshot, Tenant,
};

/// `inner` with every write checked against `gate` first.
pub struct GatedRegistry {
    inner: Arc<dyn Registry>,
    gate: WriteGate,
}

impl GatedRegistry {
    pub fn new(inner: Arc<dyn Registry>, gate: WriteGate) -> GatedRegistry {
        GatedRegistry { inner, gate }
    }

    /// Runs `call` if the gate is open, and drops it the moment the gate closes.
    async fn gated<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        if !self.gate.is_open() {
            return Err(RegistryError::Unavailable(format!(
                "{op} refused: this member's leadership is not confirmed"
            )));
        }
        tokio::select! {
            // A call that finished is reported as it went, even if the gate closed meanwhile.
            biased;
            result = call => result,
            () = self.gate.closed() => Err(RegistryError::Unavailable(format!(
                "{op} aborted: this member's leadership ended during the call"
            ))),
        }
    }
}

#[async_trait]
impl Registry for GatedRegistry {
    async fn identity(&self) -> Result<RegistryIdentity, RegistryError> {
        self.inner.identity().await
    }

    async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        self.inner.snapshot().await
    }

    fn change_feed(&self) -> Box<dyn ChangeFeed> {
        self.inner.change_feed()
    }

    fn accepts_service(&self, service: &Service) -> Result<(), Refusal> {
        self.inner.accepts_service(service)
    }

    fn accepts_instance(&self, instance: &Instance) -> Result<(), Refusal> {
        self.inner.accepts_instance(instance)
    }

    async fn ensure_service(&self, service: &Service) -> Result<String, RegistryError> {
        self.gated("ensure_service", self.inner.ensure_service(service))
            .await
    }

    async fn set_service_properties(
        &self,
        tenant: &Tenant,
        service_id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.gated(
            "set_service_properties",
            self.inner
                .set_service_properties(tenant, service_id, properties),
        )
        .await
    }

    async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        self.gated("register", self.inner.register(instance)).await
    }

    async fn heartbeat(&self, instances: &[InstanceRef]) -> Result<HeartbeatReport, RegistryError> {
        self.gated("heartbeat", self.inner.heartbeat(instances))
            .await
    }

    async fn set_status(&self, instance: &InstanceRef, status: &str) -> Result<(), RegistryError> {
        self.gated("set_status", self.inner.set_status(instance, status))
            .await
    }

    async fn set_instance_properties(
        &self,
        instance: &InstanceRef,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.gated(
            "set_instance_properties",
            self.inner.set_instance_properties(instance, properties),
        )
        .await
    }

    async fn unregister(&self, instance: &InstanceRef) -> Result<(), RegistryError> {
        self.gated("unregister", self.inner.unregister(instance))
            .await
    }
}
