//! Contracts between real processes (issue 15 item 2): a Java-chassis-style provider in dc1
//! uploads its contracts and then registers its instance; dc2's registry then holds the
//! copy's service with the same contracts, so that a consumer in dc2 loads the provider's
//! contract from its own registry. Harness: `tests/support/sync.rs`.

mod support;

use serde_json::{Value, json};
use support::sync::{NewInstance, SYNC_DEADLINE, World};

/// `(schemaId, summary)` of every schema service `sid` lists in registry `i`, or none when
/// the service is not there.
fn summaries(w: &World, i: usize, sid: &str) -> Option<Vec<(String, String)>> {
    let (status, text) = w.reg(i).request(
        reqwest::Method::GET,
        &format!("/microservices/{sid}/schemas"),
        None,
    );
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&text).ok()?;
    let mut list: Vec<(String, String)> = v["schemas"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["schemaId"].as_str().unwrap_or_default().to_owned(),
                        s["summary"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    Some(list)
}

/// The content of schema `id` of service `sid` in registry `i`, as a consumer reads it
/// (`{"schema": "…"}`).
fn content(w: &World, i: usize, sid: &str, id: &str) -> Option<String> {
    let (status, text) = w.reg(i).request(
        reqwest::Method::GET,
        &format!("/microservices/{sid}/schemas/{id}"),
        None,
    );
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&text).ok()?;
    v["schema"].as_str().map(str::to_owned)
}

#[test]
fn a_consumer_in_the_other_data_centre_reads_the_providers_contract_from_its_own_registry() {
    let mut w = World::start(2, &[]);
    let (status, text) = w.reg(0).request(
        reqwest::Method::POST,
        "/microservices",
        Some(json!({"service": {
            "appId": "shop", "serviceName": "provider", "version": "1.0.0",
            "environment": "development", "schemas": ["hello", "orders"],
        }})),
    );
    w.check(status == 200, || {
        format!("create the provider: {status} {text}")
    });
    let sid = serde_json::from_str::<Value>(&text).unwrap_or_default()["serviceId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let hello = "openapi: 3.0.0\npaths:\n  /hello: {}\n".to_owned();
    let orders = format!("openapi: 3.0.0\n# {}\n", "o".repeat(20_000));
    for (id, body, summary) in [
        ("hello", &hello, "0a1b2c3dhello"),
        ("orders", &orders, "9f8e7d6corders"),
    ] {
        let (status, text) = w.reg(0).request(
            reqwest::Method::PUT,
            &format!("/microservices/{sid}/schemas/{id}"),
            Some(json!({"schema": body, "summary": summary})),
        );
        w.check(status == 200, || format!("upload {id}: {status} {text}"));
    }
    w.reg(0).register(
        &sid,
        &NewInstance::new("provider-1", "rest://10.9.0.1:8080"),
    );

    let expected = vec![
        ("hello".to_owned(), "0a1b2c3dhello".to_owned()),
        ("orders".to_owned(), "9f8e7d6corders".to_owned()),
    ];
    // The copy's service is created under the origin's id.
    w.wait_until("the provider's contracts in dc2", SYNC_DEADLINE, |w| {
        summaries(w, 1, &sid).as_ref() == Some(&expected)
            && content(w, 1, &sid, "hello").as_ref() == Some(&hello)
    });
    let read = content(&w, 1, &sid, "orders");
    w.check(read.as_ref() == Some(&orders), || {
        format!(
            "dc2 should hold the orders contract, {} bytes",
            orders.len()
        )
    });
    w.wait_until(
        "a copy of the provider's instance in dc2",
        SYNC_DEADLINE,
        |w| w.reg(1).copies().len() == 1,
    );
}

/// The instances consumer `consumer` finds of `shop/name` in registry `i`.
fn found_by(w: &World, i: usize, consumer: &str, name: &str) -> Option<usize> {
    let (status, text) = w.reg(i).get_as(
        consumer,
        &format!("/instances?appId=shop&serviceName={name}&version=latest"),
    );
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&text).ok()?;
    Some(v["instances"].as_array().map_or(0, Vec::len))
}

/// A provider's black list reaches the copy's service in dc2 and is enforced there: a
/// black-listed consumer in dc2 does not find the copy's instances, another one does; the
/// provider's tags come along.
#[test]
fn a_black_listed_consumer_in_the_other_data_centre_does_not_find_the_provider() {
    let mut w = World::start(2, &[]);
    let (status, text) = w.reg(0).request(
        reqwest::Method::POST,
        "/microservices",
        Some(json!({
            "service": {"appId": "shop", "serviceName": "vault", "version": "1.0.0"},
            "tags": {"tier": "gold"},
            "rules": [{"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "^intruder",
                       "description": "no intruders"}],
        })),
    );
    w.check(status == 200, || {
        format!("create the provider: {status} {text}")
    });
    let sid = serde_json::from_str::<Value>(&text).unwrap_or_default()["serviceId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.reg(0)
        .register(&sid, &NewInstance::new("vault-1", "rest://10.9.0.2:8080"));
    let intruder = w.reg(1).create_service("shop", "intruder", "1.0.0");
    let friend = w.reg(1).create_service("shop", "friend", "1.0.0");
    w.wait_until(
        "the provider's black list enforced in dc2",
        SYNC_DEADLINE,
        |w| {
            w.reg(1).copies().len() == 1
                && found_by(w, 1, &friend, "vault") == Some(1)
                && found_by(w, 1, &intruder, "vault") == Some(0)
        },
    );
    let (status, text) = w.reg(1).request(
        reqwest::Method::GET,
        &format!("/microservices/{sid}/tags"),
        None,
    );
    w.check(status == 200 && text.contains("\"tier\":\"gold\""), || {
        format!("dc2's copy service should carry the provider's tags: {status} {text}")
    });
}
