//! Sample values for the registry's unit tests (compiled for tests only): one service and
//! one instance that pass both the shared bounds and ServiceComb's rules, so each test
//! edits the one field it is about, and an instance only another registry kind allows.

use std::collections::BTreeMap;

use super::model::{DataCenterInfo, HealthCheck, Instance, Service, Tenant};

/// Service `s1` of tenant `acme/shop`, every field set.
pub(crate) fn service() -> Service {
    Service {
        tenant: Tenant::new("acme", "shop"),
        service_id: "s1".into(),
        app: "mall".into(),
        name: "svc-s1".into(),
        version: "1.0.2".into(),
        environment: "production".into(),
        alias: "mall:orders".into(),
        description: "Orders.\nAll of them.".into(),
        level: "BACK".into(),
        status: "UP".into(),
        properties: BTreeMap::from([("allowCrossApp".into(), "true".into())]),
        ..Service::default()
    }
}

/// Instance `i1` of [`service`], with a push health check and a data centre.
pub(crate) fn instance() -> Instance {
    Instance {
        tenant: Tenant::new("acme", "shop"),
        service_id: "s1".into(),
        instance_id: "i1".into(),
        endpoints: vec!["rest://10.0.0.1:8080?sslEnabled=false".into()],
        host_name: "node-1".into(),
        status: "UP".into(),
        health_check: Some(HealthCheck {
            mode: "push".into(),
            interval: 30,
            times: 3,
            port: 0,
            url: String::new(),
        }),
        data_center: Some(DataCenterInfo {
            name: "dc1".into(),
            region: "eu-west".into(),
            available_zone: "az_1".into(),
        }),
        version: "1.0.2".into(),
        ..Instance::default()
    }
}

/// An instance as Eureka names it (`host:app:8080`): within the shared bounds, refused by
/// ServiceComb's rules.
pub(crate) fn eureka_style_instance() -> Instance {
    Instance {
        tenant: Tenant::default_tenant(),
        service_id: "ORDERS".into(),
        instance_id: "host:app:8080".into(),
        host_name: "host".into(),
        status: "UP".into(),
        ..Instance::default()
    }
}
