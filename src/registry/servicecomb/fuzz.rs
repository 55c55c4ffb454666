//! Property tests of the ServiceComb adapter's reading of Service Center's answers
//! (issue 20): the admin dump, the batch find of the change feed, the service and instance
//! lists. A hostile or broken registry's answer is a protocol error naming the call, or a
//! valid model; never a panic. A fixed number of cases in CI, more with `PROPTEST_CASES`
//! (docs/RELIABILITY.md, "Fuzzed inputs").

use proptest::prelude::*;

use super::convert::{InternalServices, instance_from_wire, services_of_tenant};
use super::wire::{
    BatchFindReply, GovernReply, HeartbeatSetReply, InstancesReply, ServiceReply, ServicesReply,
};
use super::{dump, parse};
use crate::registry::fuzz_json::hostile_body;
use crate::registry::{RegistryError, Tenant};

const DUMP: &str = r#"{"info":{"version":"1.4.8"},"cache":{
  "services":[
    {"key":"/cse-sr/ms/files/default/default/sc","rev":1,"value":{"serviceId":"sc","appId":"default","serviceName":"SERVICECENTER","version":"1.4.8"},"cluster":"default"},
    {"key":"/cse-sr/ms/files/d2/p2/s1","rev":2,"value":{"serviceId":"s1","appId":"a","serviceName":"n","version":"1.0.0","properties":{"k":"v"},"schemas":["hello"],"framework":{"name":"java","version":"1"}},"cluster":"default"}],
  "serviceIndexes":[{"key":"/cse-sr/ms/indexes/x","rev":1,"value":"s1"}],
  "instances":[
    {"key":"/cse-sr/inst/files/default/default/sc/i0","rev":3,"value":{"instanceId":"i0","serviceId":"sc","hostName":"h"}},
    {"key":"/cse-sr/inst/files/d2/p2/s1/i1","rev":4,"value":{"instanceId":"i1","serviceId":"s1","hostName":"h","status":"UP","version":"1.0.0","modTimestamp":"17","endpoints":["rest://10.0.0.1:8080"]}},
    {"key":"/cse-sr/inst/files/d2/p2/s1/i2","rev":5,"value":{"instanceId":"i2","serviceId":"s1","hostName":"h2","status":"DOWN","healthCheck":{"mode":"push","interval":30,"times":3}}}]}}"#;

const INSTANCE: &str = r#"{"instanceId":"i1","serviceId":"s1","hostName":"h","endpoints":["rest://10.0.0.1:8080"],"status":"UP","version":"1.0.0","properties":{"k":"v"},"healthCheck":{"mode":"push","interval":30,"times":3,"port":0,"url":""},"dataCenterInfo":{"name":"dc","region":"r","availableZone":"z"},"modTimestamp":"17"}"#;

const SERVICES: &str = r#"{"services":[{"serviceId":"s1","appId":"a","serviceName":"n","version":"1.0.0","level":"BACK","status":"UP","environment":"","alias":"x","description":"d","properties":{"k":"v"},"schemas":["hello"]},{"serviceId":"sc","appId":"default","serviceName":"SERVICECENTER","version":"1.4.8"}]}"#;

fn samples() -> &'static [&'static str] {
    static SAMPLES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(|| {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        vec![
            DUMP,
            SERVICES,
            leak(format!(r#"{{"instances":[{INSTANCE},{INSTANCE}]}}"#)),
            leak(format!(
                r#"{{"services":{{"updated":[{{"index":0,"rev":"r1","instances":[{INSTANCE}]}}],"notModified":[1],"failed":[{{"indexes":[2],"error":{{"errorCode":"400012","errorMessage":"m"}}}}]}},"instances":{{"updated":[],"notModified":[],"failed":[]}}}}"#
            )),
            r#"{"instances":[{"instanceId":"i1","serviceId":"s1","errMessage":"","errorCode":""}]}"#,
            r#"{"statistics":{"services":{"count":3},"instances":{"count":7}}}"#,
            r#"{"service":{"serviceId":"s1","appId":"a","serviceName":"n","version":"1.0.0"}}"#,
        ]
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(crate::fuzz_cases(512))
    }
}

/// A refusal is a protocol error that names the call.
fn check_refusal(e: &RegistryError, op: &str) -> Result<(), TestCaseError> {
    match e {
        RegistryError::Protocol(text) => {
            prop_assert!(text.starts_with(&format!("{op}: ")), "{}", text);
        }
        other => prop_assert!(false, "{op}: not a protocol error: {other:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// The admin dump: a snapshot without Service Center's own services whose instances
    /// are unique and in order, or a protocol error.
    #[test]
    fn dumps_are_snapshots_or_protocol_errors(body in hostile_body(&[DUMP])) {
        let internal = InternalServices::new(&[]);
        match dump::parse(&body[..], &internal) {
            Ok(snapshot) => {
                for pair in snapshot.instances.windows(2) {
                    let key = |i: &crate::registry::Instance| {
                        (i.tenant.clone(), i.service_id.clone(), i.instance_id.clone())
                    };
                    prop_assert!(key(&pair[0]) < key(&pair[1]), "instances unique and sorted");
                }
                for s in &snapshot.services {
                    prop_assert!(!internal.is_internal(&s.tenant, &s.app, &s.name), "{:?}", s);
                }
            }
            Err(e) => check_refusal(&e, "dump")?,
        }
    }

    /// Every answer of the registry API the adapter reads: parsed into its reply type (and,
    /// for those carrying services and instances, converted to the model), or refused as a
    /// protocol error naming the call.
    #[test]
    fn api_answers_are_models_or_protocol_errors(body in hostile_body(samples())) {
        let tenant = Tenant::new("acme", "shop");
        match parse::<ServicesReply>("list_services", &body) {
            Ok(reply) => {
                let wire_ids: Vec<String> = reply.services.iter().map(|s| s.service_id.clone()).collect();
                let services = services_of_tenant(&tenant, reply.services, &InternalServices::new(&[]));
                for (id, service) in &services {
                    prop_assert!(!id.is_empty());
                    prop_assert_eq!(id, &service.service_id);
                    prop_assert!(wire_ids.contains(id));
                    prop_assert_eq!(&service.tenant, &tenant);
                }
            }
            Err(e) => check_refusal(&e, "list_services")?,
        }
        match parse::<InstancesReply>("health", &body) {
            Ok(reply) => {
                for wire in reply.instances {
                    let id = wire.instance_id.clone();
                    let instance = instance_from_wire(tenant.clone(), "s1", wire);
                    prop_assert_eq!(instance.instance_id, id);
                    prop_assert_eq!(&instance.tenant, &tenant);
                }
            }
            Err(e) => check_refusal(&e, "health")?,
        }
        match parse::<BatchFindReply>("feed_poll", &body) {
            Ok(reply) => {
                for updated in reply.services.updated.into_iter().chain(reply.instances.updated) {
                    for wire in updated.instances {
                        let instance = instance_from_wire(tenant.clone(), "s1", wire);
                        prop_assert_eq!(&instance.tenant, &tenant);
                    }
                }
            }
            Err(e) => check_refusal(&e, "feed_poll")?,
        }
        if let Err(e) = parse::<GovernReply>("feed_statistics", &body) {
            check_refusal(&e, "feed_statistics")?;
        }
        if let Err(e) = parse::<HeartbeatSetReply>("heartbeat", &body) {
            check_refusal(&e, "heartbeat")?;
        }
        if let Err(e) = parse::<ServiceReply>("get_service", &body) {
            check_refusal(&e, "get_service")?;
        }
    }
}
