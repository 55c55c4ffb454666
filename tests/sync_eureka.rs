//! End-to-end sync across registry kinds: real `syncer daemon` processes next to a ServiceComb
//! development registry or a Eureka development registry (`syncer::devreg::eureka`, in its
//! default fast mode), all in one gossip pool. The Eureka data centre's syncer runs with
//! `--sc-plugin eureka`. Eureka is read and written here with the test's own client
//! (`tests/support/eureka.rs`), written from the reference, not with the adapter's code.

#[path = "eureka/python.rs"]
mod python;
mod support;

use std::collections::BTreeMap;

use support::eureka::{EInst, NewEureka};
use support::sync::{DcSetup, Inst, NewInstance, ORIGIN, SYNC_DEADLINE, World, props};

/// Length of a copy's id: `syncer-` and 32 hex digits.
const COPY_ID_LEN: usize = 39;

fn is_copy_id(id: &str) -> bool {
    id.len() == COPY_ID_LEN
        && id.starts_with("syncer-")
        && id["syncer-".len()..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn show<T: std::fmt::Display>(list: &[T]) -> String {
    if list.is_empty() {
        return "(none)".to_owned();
    }
    list.iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A ServiceComb data centre and a Eureka one.
fn sc_and_eureka() -> World {
    World::start_each(vec![DcSetup::default(), DcSetup::eureka()], &[])
}

/// The single copy in Eureka registry `i`, if there is exactly one.
fn single_eureka_copy(w: &World, i: usize) -> Option<EInst> {
    let copies = w.eureka(i).copies();
    (copies.len() == 1).then(|| copies[0].clone())
}

/// The single copy in ServiceComb registry `i`, if there is exactly one.
fn single_sc_copy(w: &World, i: usize) -> Option<Inst> {
    let copies = w.reg(i).copies();
    (copies.len() == 1).then(|| copies[0].clone())
}

/// Whether `metadata` holds every pair of `wanted`.
fn has_all(metadata: &BTreeMap<String, String>, wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| metadata.get(*k).map(String::as_str) == Some(*v))
}

#[test]
fn a_servicecomb_instance_is_mirrored_into_eureka_through_its_whole_life() {
    let mut w = sc_and_eureka();
    let sid = w.reg(0).create_service("shop", "orders", "1.2.3");
    let origin = NewInstance::new("orders-host", "rest://10.1.0.1:8080").property("zone", "a");
    let iid = w.reg(0).register(&sid, &origin);

    w.wait_until(
        "a copy of the instance in the Eureka dc2",
        SYNC_DEADLINE,
        |w| single_eureka_copy(w, 1).is_some(),
    );
    let copy = single_eureka_copy(&w, 1).expect("one copy");
    w.check(is_copy_id(&copy.instance_id), || {
        format!("the copy's id is not syncer- + 32 hex: {copy}")
    });
    w.check(
        copy.app == "ORDERS"
            && copy.vip == "orders"
            && copy.ip == "10.1.0.1"
            && copy.port == Some(8080)
            && copy.host_name == "orders-host"
            && copy.status == "UP",
        || {
            format!(
                "the copy should be ORDERS/orders at 10.1.0.1:8080, host orders-host, UP: {copy}"
            )
        },
    );
    w.check(
        has_all(
            &copy.metadata,
            &[
                ("zone", "a"),
                (ORIGIN, "dc1"),
                ("sc.appId", "shop"),
                ("sc.version", "1.2.3"),
            ],
        ),
        || {
            format!(
                "the copy should carry the origin's properties, its mark and its service: {copy}"
            )
        },
    );
    let dc2 = w.eureka(1).list();
    w.check(dc2.len() == 1, || {
        format!("dc2 should hold only the copy:\n{}", show(&dc2))
    });

    // Statuses, including the two ServiceComb has and Eureka spells differently or lacks.
    for (sc, eureka) in [
        ("DOWN", "DOWN"),
        ("OUTOFSERVICE", "OUT_OF_SERVICE"),
        ("UP", "UP"),
        ("TESTING", "OUT_OF_SERVICE"),
        ("STARTING", "STARTING"),
        ("UP", "UP"),
    ] {
        w.reg(0).set_status(&sid, &iid, sc);
        w.wait_until(
            &format!("the copy to become {eureka} after {sc}"),
            SYNC_DEADLINE,
            |w| single_eureka_copy(w, 1).is_some_and(|c| c.status == eureka),
        );
    }

    // Properties: replaced, the mark kept, the copy kept.
    w.reg(0)
        .set_properties(&sid, &iid, &props(&[("zone", "b"), ("weight", "7")]));
    w.wait_until("the copy to get the new properties", SYNC_DEADLINE, |w| {
        single_eureka_copy(w, 1).is_some_and(|c| {
            has_all(
                &c.metadata,
                &[("zone", "b"), ("weight", "7"), (ORIGIN, "dc1")],
            )
        })
    });
    let same = single_eureka_copy(&w, 1).expect("one copy");
    w.check(same.instance_id == copy.instance_id, || {
        format!("a property change should keep the copy: was {copy}, now {same}")
    });

    // No echo: dc1 holds its own instance and nothing else.
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 1 && dc1[0].instance_id == iid, || {
        format!(
            "dc1 should hold only its own instance {iid}:\n{}",
            show(&dc1)
        )
    });

    // The copy's lease is kept alive: renewals go on without re-registrations piling up,
    // and Eureka never sees the replication header (beats would not be forwarded to peers).
    let requests = w.eureka(1).requests();
    w.check(
        requests.iter().all(|r| {
            !r.headers
                .iter()
                .any(|(k, _)| k == "x-netflix-discovery-replication")
        }),
        || "syncer sent x-netflix-discovery-replication to Eureka".to_owned(),
    );

    w.reg(0).unregister(&sid, &iid);
    w.wait_until("the copy to be cancelled in Eureka", SYNC_DEADLINE, |w| {
        w.eureka(1).instances().is_ok_and(|l| l.is_empty())
    });
}

#[test]
fn a_eureka_instance_is_mirrored_into_servicecomb_through_its_whole_life() {
    let mut w = sc_and_eureka();
    let origin = NewEureka::new("orders", "10.0.0.5", 8080).metadata("zone", "a");
    w.eureka(1).register(&origin);
    assert_eq!(origin.instance_id, "10.0.0.5:orders:8080");

    w.wait_until("a copy of the Eureka instance in dc1", SYNC_DEADLINE, |w| {
        single_sc_copy(w, 0).is_some()
    });
    let copy = single_sc_copy(&w, 0).expect("one copy");
    w.check(is_copy_id(&copy.instance_id), || {
        format!("the Eureka id host:app:port becomes a syncer id in ServiceComb: {copy}")
    });
    w.check(
        (copy.app.as_str(), copy.name.as_str(), copy.version.as_str())
            == ("default", "orders", "0.0.1"),
        || format!("the copy should be in service default/orders/0.0.1: {copy}"),
    );
    w.check(
        copy.endpoints == vec!["rest://10.0.0.5:8080".to_owned()]
            && copy.host_name == "10.0.0.5"
            && copy.status == "UP"
            && copy.properties == props(&[("zone", "a"), (ORIGIN, "dc2")]),
        || format!("the copy should be rest://10.0.0.5:8080, UP, zone=a, {ORIGIN}=dc2: {copy}"),
    );

    // An operator takes the instance out of service in Eureka, then back.
    w.eureka(1)
        .override_status("ORDERS", &origin.instance_id, "OUT_OF_SERVICE");
    w.wait_until("the copy to become OUTOFSERVICE", SYNC_DEADLINE, |w| {
        single_sc_copy(w, 0).is_some_and(|c| c.status == "OUTOFSERVICE")
    });
    w.eureka(1)
        .clear_override("ORDERS", &origin.instance_id, "UP");
    w.wait_until("the copy to be UP again", SYNC_DEADLINE, |w| {
        single_sc_copy(w, 0).is_some_and(|c| c.status == "UP")
    });
    let again = single_sc_copy(&w, 0).expect("one copy");
    w.check(again.instance_id == copy.instance_id, || {
        format!("a status change should keep the copy: was {copy}, now {again}")
    });

    // No echo into Eureka.
    let dc2 = w.eureka(1).list();
    w.check(
        dc2.len() == 1 && dc2[0].instance_id == origin.instance_id,
        || format!("dc2 should hold only its own instance:\n{}", show(&dc2)),
    );

    w.eureka(1).unregister("ORDERS", &origin.instance_id);
    w.wait_until("the copy to be removed from dc1", SYNC_DEADLINE, |w| {
        w.reg(0).instances().is_ok_and(|l| l.is_empty())
    });
}

#[test]
fn three_data_centres_of_two_kinds_mirror_each_other_without_copies_of_copies() {
    let mut w = World::start_each(
        vec![DcSetup::default(), DcSetup::eureka(), DcSetup::default()],
        &[],
    );
    let sid1 = w.reg(0).create_service("shop", "cart", "1.0.0");
    w.reg(0)
        .register(&sid1, &NewInstance::new("cart-1", "rest://10.1.0.1:8080"));
    w.eureka(1)
        .register(&NewEureka::new("billing", "10.2.0.1", 9090));
    let sid3 = w.reg(2).create_service("shop", "stock", "1.0.0");
    w.reg(2)
        .register(&sid3, &NewInstance::new("stock-1", "rest://10.3.0.1:7070"));

    // Every data centre: its own instance plus one copy of each other's, marked with the
    // instance's real origin (never the data centre it passed through).
    let settled = |w: &World| {
        let sc = |i: usize, own: &str, others: &[(&str, &str)]| {
            let list = w.reg(i).list();
            let copies: BTreeMap<String, String> = list
                .iter()
                .filter(|c| c.is_copy())
                .map(|c| {
                    (
                        c.host_name.clone(),
                        c.origin().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            list.len() == 3
                && list
                    .iter()
                    .filter(|c| !c.is_copy())
                    .all(|c| c.host_name == own)
                && copies
                    == others
                        .iter()
                        .map(|(h, o)| ((*h).to_owned(), (*o).to_owned()))
                        .collect()
        };
        let eureka = w.eureka(1).list();
        let eureka_copies: BTreeMap<String, String> = eureka
            .iter()
            .filter(|c| c.is_copy())
            .map(|c| {
                (
                    c.host_name.clone(),
                    c.origin().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        sc(0, "cart-1", &[("10.2.0.1", "dc2"), ("stock-1", "dc3")])
            && sc(2, "stock-1", &[("10.2.0.1", "dc2"), ("cart-1", "dc1")])
            && eureka.len() == 3
            && eureka_copies
                == BTreeMap::from([
                    ("cart-1".to_owned(), "dc1".to_owned()),
                    ("stock-1".to_owned(), "dc3".to_owned()),
                ])
    };
    w.wait_until(
        "each data centre to hold its own instance and one copy of each other's",
        SYNC_DEADLINE,
        settled,
    );

    // A later change still flows everywhere, and nothing else has appeared meanwhile.
    let billing = NewEureka::new("billing", "10.2.0.1", 9090);
    w.eureka(1)
        .override_status("BILLING", &billing.instance_id, "OUT_OF_SERVICE");
    w.wait_until(
        "the Eureka status change to reach both ServiceComb data centres",
        SYNC_DEADLINE,
        |w| {
            [0, 2].iter().all(|&i| {
                w.reg(i)
                    .copies()
                    .iter()
                    .any(|c| c.host_name == "10.2.0.1" && c.status == "OUTOFSERVICE")
            })
        },
    );
    let still = settled(&w);
    w.check(still, || {
        "the copies changed in number or origin".to_owned()
    });
}

#[test]
fn a_copy_cancelled_in_eureka_behind_syncers_back_comes_back() {
    let mut w = sc_and_eureka();
    let sid = w.reg(0).create_service("shop", "cart", "1.0.0");
    w.reg(0)
        .register(&sid, &NewInstance::new("cart-host", "rest://10.3.0.1:8080"));
    w.wait_until("a copy in Eureka", SYNC_DEADLINE, |w| {
        single_eureka_copy(w, 1).is_some()
    });
    let copy = single_eureka_copy(&w, 1).expect("one copy");
    w.eureka(1).unregister(&copy.app, &copy.instance_id);
    w.wait_until("the copy to be registered again", SYNC_DEADLINE, |w| {
        single_eureka_copy(w, 1).is_some_and(|c| {
            c.origin() == Some("dc1") && c.ip == "10.3.0.1" && c.port == Some(8080)
        })
    });
}

#[test]
fn a_killed_syncer_next_to_eureka_restarts_without_duplicating_copies() {
    let mut w = sc_and_eureka();
    let sid = w.reg(0).create_service("shop", "stock", "1.0.0");
    for n in 1..=2 {
        w.reg(0).register(
            &sid,
            &NewInstance::new(&format!("stock-{n}"), &format!("rest://10.4.0.{n}:8080")),
        );
    }
    w.wait_until("copies of both instances in Eureka", SYNC_DEADLINE, |w| {
        w.eureka(1).copies().len() == 2
    });
    let before: Vec<String> = w
        .eureka(1)
        .copies()
        .into_iter()
        .map(|c| c.instance_id)
        .collect();

    let status = w.stop_daemon(1, "KILL");
    assert!(!status.success(), "kill -9 ends the process: {status}");
    w.reg(0)
        .register(&sid, &NewInstance::new("stock-3", "rest://10.4.0.3:8080"));
    w.start_daemon(1);
    w.wait_until(
        "exactly three copies in Eureka after the restart",
        SYNC_DEADLINE,
        |w| {
            let copies = w.eureka(1).copies();
            copies.len() == 3
                && before
                    .iter()
                    .all(|id| copies.iter().any(|c| &c.instance_id == id))
        },
    );

    // A later change flows, and the count stays exact.
    w.reg(0)
        .register(&sid, &NewInstance::new("stock-4", "rest://10.4.0.4:8080"));
    w.wait_until("the fourth copy", SYNC_DEADLINE, |w| {
        w.eureka(1).copies().len() == 4
    });
    let dc2 = w.eureka(1).list();
    w.check(dc2.len() == 4, || {
        format!("dc2 should hold exactly 4 copies:\n{}", show(&dc2))
    });
}

#[test]
fn same_named_services_of_two_apps_stay_apart_in_one_eureka_app() {
    let mut w = sc_and_eureka();
    let shop = w.reg(0).create_service("shop", "orders", "1.0.0");
    let crm = w.reg(0).create_service("crm", "orders", "1.0.0");
    let shop_iid = w.reg(0).register(
        &shop,
        &NewInstance::new("shop-orders", "rest://10.5.0.1:8080"),
    );
    w.reg(0).register(
        &crm,
        &NewInstance::new("crm-orders", "rest://10.5.0.2:8443?sslEnabled=true"),
    );
    w.wait_until("two copies in the Eureka app ORDERS", SYNC_DEADLINE, |w| {
        let copies = w.eureka(1).copies();
        copies.len() == 2
            && copies.iter().all(|c| c.app == "ORDERS")
            && copies.iter().any(|c| {
                c.host_name == "shop-orders"
                    && c.metadata.get("sc.appId").map(String::as_str) == Some("shop")
                    && c.port == Some(8080)
            })
            && copies.iter().any(|c| {
                c.host_name == "crm-orders"
                    && c.metadata.get("sc.appId").map(String::as_str) == Some("crm")
                    && c.secure_port == Some(8443)
            })
    });

    // Removing one app's instance leaves the other's.
    w.reg(0).unregister(&shop, &shop_iid);
    w.wait_until("only crm's copy left", SYNC_DEADLINE, |w| {
        let copies = w.eureka(1).copies();
        copies.len() == 1 && copies[0].host_name == "crm-orders"
    });
    // Nothing of Eureka came back into ServiceComb as a service of its own.
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 1 && !dc1[0].is_copy(), || {
        format!("dc1 should hold only crm's own instance:\n{}", show(&dc1))
    });
}

#[test]
fn syncer_never_removes_a_eureka_instance_it_did_not_register() {
    let mut w = sc_and_eureka();
    // An application's instance that claims an origin (one mark, no copy id): never exported,
    // never syncer's to delete.
    let claimant = NewEureka::new("lookalike", "10.6.0.9", 8080).metadata(ORIGIN, "dc1");
    w.eureka(1).register(&claimant);
    let sid = w.reg(0).create_service("shop", "cart", "1.0.0");
    let iid = w
        .reg(0)
        .register(&sid, &NewInstance::new("cart-host", "rest://10.6.0.1:8080"));
    w.wait_until("a copy in Eureka", SYNC_DEADLINE, |w| {
        w.eureka(1)
            .list()
            .iter()
            .any(|c| c.host_name == "cart-host")
    });
    w.reg(0).unregister(&sid, &iid);
    w.wait_until("the copy to go", SYNC_DEADLINE, |w| {
        !w.eureka(1)
            .list()
            .iter()
            .any(|c| c.host_name == "cart-host")
    });
    let dc2 = w.eureka(1).list();
    w.check(
        dc2.len() == 1 && dc2[0].instance_id == claimant.instance_id,
        || format!("the application's own instance must stay:\n{}", show(&dc2)),
    );
    let dc1 = w.reg(0).list();
    w.check(dc1.is_empty(), || {
        format!(
            "an instance claiming an origin is never exported:\n{}",
            show(&dc1)
        )
    });
}

/// A one-route HTTP server answering `GET /hello` with `text`; its port.
fn serve_hello(w: &World, text: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener =
        w.rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the sample service");
    let port = listener.local_addr().expect("local address").port();
    w.rt.spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0_u8; 4096];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..n]);
                let (status, body) = if head.starts_with("GET /hello") {
                    ("200 OK", text)
                } else {
                    ("404 Not Found", "no such path")
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[test]
fn a_real_eureka_client_calls_a_servicecomb_instance_syncer_mirrored() {
    let python = match python::py_eureka_client() {
        Ok(python) => python,
        Err(why) => {
            eprintln!("SKIP: py-eureka-client cannot run here: {why}");
            return;
        }
    };
    let mut w = sc_and_eureka();
    let port = serve_hello(&w, "hello from a ServiceComb data centre");
    let sid = w.reg(0).create_service("shop", "greeter", "1.0.0");
    w.reg(0).register(
        &sid,
        &NewInstance::new("greeter-host", &format!("rest://127.0.0.1:{port}")),
    );
    w.wait_until("the greeter's copy in Eureka", SYNC_DEADLINE, |w| {
        w.eureka(1)
            .copies()
            .iter()
            .any(|c| c.app == "GREETER" && c.port == Some(port))
    });

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eureka/discover_mirrored.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(w.eureka(1).url())
        .arg("GREETER")
        .arg("/hello")
        .output()
        .expect("run py-eureka-client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    w.check(
        out.status.success() && stdout.contains("BODY hello from a ServiceComb data centre"),
        || {
            format!(
                "py-eureka-client did not reach the instance:\nstdout: {stdout}\nstderr: {stderr}"
            )
        },
    );
    // It read the registry as real clients do: XML, gzip-compressed.
    let fetched = w.eureka(1).requests().into_iter().any(|r| {
        r.method == "GET"
            && r.path.ends_with("/apps/")
            && !r
                .headers
                .iter()
                .any(|(k, v)| k == "accept" && v.contains("json"))
    });
    w.check(fetched, || {
        "the Python client's registry fetch is not in the Eureka request log".to_owned()
    });
}
