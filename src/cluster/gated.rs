//! A registry whose writes pass a [`WriteGate`]: the active member of a data centre writes
//! only while its leadership is confirmed. Reads are never gated.

use std::collections::BTreeMap;
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

    fn check(&self, op: &str) -> Result<(), RegistryError> {
        if self.gate.is_open() {
            Ok(())
        } else {
            Err(RegistryError::Unavailable(format!(
                "{op} refused: this member's leadership is not confirmed"
            )))
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
        self.check("ensure_service")?;
        self.inner.ensure_service(service).await
    }

    async fn set_service_properties(
        &self,
        tenant: &Tenant,
        service_id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.check("set_service_properties")?;
        self.inner
            .set_service_properties(tenant, service_id, properties)
            .await
    }

    async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        self.check("register")?;
        self.inner.register(instance).await
    }

    async fn heartbeat(&self, instances: &[InstanceRef]) -> Result<HeartbeatReport, RegistryError> {
        self.check("heartbeat")?;
        self.inner.heartbeat(instances).await
    }

    async fn set_status(&self, instance: &InstanceRef, status: &str) -> Result<(), RegistryError> {
        self.check("set_status")?;
        self.inner.set_status(instance, status).await
    }

    async fn set_instance_properties(
        &self,
        instance: &InstanceRef,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.check("set_instance_properties")?;
        self.inner
            .set_instance_properties(instance, properties)
            .await
    }

    async fn unregister(&self, instance: &InstanceRef) -> Result<(), RegistryError> {
        self.check("unregister")?;
        self.inner.unregister(instance).await
    }
}
