//! What Eureka requires of the data syncer writes into it, beyond the wire-safety bounds
//! every registry shares ([`crate::registry::bounds`]): [`Eureka`] answers
//! [`Registry::accepts_service`] and [`Registry::accepts_instance`] with these, so the
//! importer refuses what Eureka would refuse (reference §2.1) before making a call.
//!
//! Eureka is lenient: any instance id is fine (`host:app:8080` is ordinary), since the
//! adapter percent-encodes path segments. It needs an instance id, a service name (the
//! application), and an IP address: the host of the first endpoint, else the host name.
//!
//! [`Eureka`]: super::Eureka
//! [`Registry::accepts_service`]: crate::registry::Registry::accepts_service
//! [`Registry::accepts_instance`]: crate::registry::Registry::accepts_instance

use crate::registry::{Instance, Refusal, Service};

/// Eureka's rules for the service of a copy: a name, which becomes the application.
///
/// # Errors
/// A [`Refusal`] naming `service.name`.
pub fn check_service(service: &Service) -> Result<(), Refusal> {
    if service.name.trim().is_empty() {
        return Err(Refusal {
            field: "service.name".into(),
            reason: "missing_field",
            detail: "Missing appName: Eureka names the application after the service".into(),
        });
    }
    Ok(())
}

/// Eureka's rules for a copy: an instance id, and an address (`ipAddr`) from the first
/// endpoint with a host or the host name.
///
/// # Errors
/// A [`Refusal`] naming the field.
pub fn check_instance(instance: &Instance) -> Result<(), Refusal> {
    if instance.instance_id.is_empty() {
        return Err(Refusal {
            field: "instance.instance_id".into(),
            reason: "missing_field",
            detail: "Missing instanceId".into(),
        });
    }
    let endpoint_host = instance.endpoints.iter().any(|e| {
        url::Url::parse(e)
            .ok()
            .and_then(|u| u.host_str().map(|h| !h.is_empty()))
            .unwrap_or(false)
    });
    if !endpoint_host && instance.host_name.trim().is_empty() {
        return Err(Refusal {
            field: "instance.host_name".into(),
            reason: "missing_field",
            detail: "Missing ip address: no endpoint with a host and no host name".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fixtures;

    #[test]
    fn eureka_ids_are_fine() {
        assert_eq!(check_instance(&fixtures::eureka_style_instance()), Ok(()));
        assert_eq!(check_instance(&fixtures::instance()), Ok(()));
        assert_eq!(check_service(&fixtures::service()), Ok(()));
    }

    #[test]
    fn no_address_or_name_is_refused() {
        let mut i = fixtures::instance();
        i.host_name = String::new();
        i.endpoints = vec!["not a url".into()];
        let refusal = check_instance(&i).unwrap_err();
        assert_eq!(refusal.field, "instance.host_name");
        assert!(refusal.detail.contains("Missing ip address"), "{refusal}");
        i.endpoints = vec!["rest://10.0.0.1:80".into()];
        assert_eq!(check_instance(&i), Ok(()));
        i.instance_id = String::new();
        assert_eq!(
            check_instance(&i).unwrap_err().field,
            "instance.instance_id"
        );

        let mut s = fixtures::service();
        s.name = " ".into();
        assert_eq!(check_service(&s).unwrap_err().reason, "missing_field");
    }
}
