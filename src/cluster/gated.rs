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
    AccessRule, ChangeFeed, HeartbeatReport, Instance, InstanceRef, Refusal, Registry,
    RegistryError, RegistryIdentity, Schema, Service, Snapshot, Tenant,
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

    async fn schemas(
        &self,
        tenant: &Tenant,
        service_id: &str,
    ) -> Result<Vec<Schema>, RegistryError> {
        self.inner.schemas(tenant, service_id).await
    }

    async fn put_schema(
        &self,
        tenant: &Tenant,
        service_id: &str,
        schema: &Schema,
    ) -> Result<(), RegistryError> {
        self.gated(
            "put_schema",
            self.inner.put_schema(tenant, service_id, schema),
        )
        .await
    }

    async fn set_service_tags(
        &self,
        tenant: &Tenant,
        service_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.gated(
            "set_service_tags",
            self.inner.set_service_tags(tenant, service_id, tags),
        )
        .await
    }

    async fn set_service_rules(
        &self,
        tenant: &Tenant,
        service_id: &str,
        rules: &[AccessRule],
    ) -> Result<(), RegistryError> {
        self.gated(
            "set_service_rules",
            self.inner.set_service_rules(tenant, service_id, rules),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::registry::fixtures::{instance, service};
    use crate::registry::memory::MemoryRegistry;

    /// Issue 21, item 4: a write that is still under way when the gate closes is dropped at
    /// that moment, so it cannot land later (here the registry would apply it after 10 s).
    #[tokio::test(start_paused = true)]
    async fn a_write_under_way_when_the_gate_closes_is_dropped_then() {
        let memory = Arc::new(MemoryRegistry::new("gated-1"));
        memory
            .ensure_service(&service())
            .await
            .expect("the service is created");
        memory.set_write_delay(Duration::from_secs(10));
        let start = Instant::now();
        let gate = WriteGate::open_until(start + Duration::from_secs(1));
        let gated = GatedRegistry::new(memory.clone(), gate);
        let result = gated.register(&instance()).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(
            matches!(&result, Err(RegistryError::Unavailable(why)) if why.contains("aborted")),
            "{result:?}"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(memory.contents().instances.is_empty(), "the write landed");
        // A closed gate refuses before calling.
        let result = gated.unregister(&instance().reference()).await;
        assert_eq!(start.elapsed(), Duration::from_secs(21));
        assert!(
            matches!(&result, Err(RegistryError::Unavailable(why)) if why.contains("refused")),
            "{result:?}"
        );
    }

    /// A write that ends before the gate closes reports its own result.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_ends_in_time_goes_through() {
        let memory = Arc::new(MemoryRegistry::new("gated-2"));
        memory.set_write_delay(Duration::from_millis(300));
        let gate = WriteGate::open_until(Instant::now() + Duration::from_secs(1));
        let gated = GatedRegistry::new(memory.clone(), gate);
        gated
            .ensure_service(&service())
            .await
            .expect("in time for the gate");
        gated
            .register(&instance())
            .await
            .expect("in time for the gate");
        assert_eq!(memory.contents().instances.len(), 1);
    }
}
