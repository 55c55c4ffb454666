//! End-to-end sync between data centres: real `syncer daemon` processes, each next to its own
//! dev registry (in-process, restartable on its address), all in one gossip pool on
//! 127.0.0.x. Every test has its own directories and ports; waits poll every 20 ms with a
//! deadline and print every registry and syncer log when they fail. Harness:
//! `tests/support/sync.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::etcd::EtcdServer;
use support::sync::{
    COPY_PREFIX, Inst, NewInstance, ORIGIN, SYNC_DEADLINE, World, metric_sum, props,
};

/// Length of a copy's id: `syncer-` and 32 hex digits.
const COPY_ID_LEN: usize = 39;

fn show(list: &[Inst]) -> String {
    if list.is_empty() {
        return "(none)".to_owned();
    }
    list.iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The single copy in registry `i`, if there is exactly one.
fn single_copy(w: &World, i: usize) -> Option<Inst> {
    let copies = w.reg(i).copies();
    (copies.len() == 1).then(|| copies[0].clone())
}

/// Whether `id` looks like a copy id: `syncer-` + 32 lower-case hex digits.
fn is_copy_id(id: &str) -> bool {
    id.len() == COPY_ID_LEN
        && id.starts_with(COPY_PREFIX)
        && id[COPY_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Registry `i` holds exactly one copy per host name in `hosts` (and nothing else that is a
/// copy), each marked with `origin` and carrying the origin's endpoints.
fn copies_match(w: &World, i: usize, origin: &str, hosts: &BTreeMap<String, Vec<String>>) -> bool {
    let copies = w.reg(i).copies();
    copies.len() == hosts.len()
        && copies
            .iter()
            .all(|c| c.origin() == Some(origin) && hosts.get(&c.host_name) == Some(&c.endpoints))
}

#[test]
fn an_instance_is_mirrored_through_its_whole_life_without_echo() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "orders", "1.2.3");
    let origin = NewInstance::new("orders-host", "rest://10.1.0.1:8080").property("zone", "a");
    let iid = w.reg(0).register(&sid, &origin);

    // Registered in dc1: exactly one copy in dc2.
    w.wait_until("a copy of the instance in dc2", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some()
    });
    let copy = single_copy(&w, 1).expect("one copy");
    let dc2 = w.reg(1).list();
    w.check(dc2.len() == 1, || {
        format!("dc2 should hold only the copy:\n{}", show(&dc2))
    });
    w.check(is_copy_id(&copy.instance_id), || {
        format!("the copy's id is not syncer- + 32 hex: {copy}")
    });
    w.check(
        (copy.app.as_str(), copy.name.as_str(), copy.version.as_str())
            == ("shop", "orders", "1.2.3"),
        || format!("the copy is not in service shop/orders/1.2.3: {copy}"),
    );
    w.check(
        copy.host_name == origin.host_name && copy.endpoints == origin.endpoints,
        || format!("the copy's host name or endpoints differ from the origin's: {copy}"),
    );
    w.check(copy.status == "UP", || {
        format!("the copy is not UP: {copy}")
    });
    w.check(
        copy.properties == props(&[("zone", "a"), (ORIGIN, "dc1")]),
        || format!("the copy should carry the origin's properties and {ORIGIN}=dc1: {copy}"),
    );

    // No echo: dc1 holds its own instance and nothing else.
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 1 && dc1[0].instance_id == iid, || {
        format!(
            "dc1 should hold only its own instance {iid}:\n{}",
            show(&dc1)
        )
    });

    // Status.
    w.reg(0).set_status(&sid, &iid, "DOWN");
    w.wait_until("the copy to become DOWN", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some_and(|c| c.status == "DOWN")
    });

    // Properties: replaced, and the copy keeps its origin mark.
    w.reg(0)
        .set_properties(&sid, &iid, &props(&[("zone", "b"), ("weight", "7")]));
    w.wait_until("the copy to get the new properties", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some_and(|c| {
            c.properties == props(&[("zone", "b"), ("weight", "7"), (ORIGIN, "dc1")])
        })
    });
    let same = single_copy(&w, 1).expect("one copy");
    w.check(same.instance_id == copy.instance_id, || {
        format!(
            "a status or properties change should update the copy in place, not replace it: was {}, now {same}",
            copy.instance_id
        )
    });

    // Endpoints can only change by registering again (SC ignores the body of a known id):
    // the origin is removed and registered again under its id with new endpoints, at once.
    let moved = NewInstance::new("orders-host", "rest://10.1.0.2:9090")
        .id(&iid)
        .property("zone", "b");
    w.reg(0).unregister(&sid, &iid);
    let again = w.reg(0).register(&sid, &moved);
    assert_eq!(again, iid, "dc1 kept the chosen instance id");
    w.wait_until(
        "exactly one copy, with the new endpoints",
        SYNC_DEADLINE,
        |w| {
            single_copy(w, 1).is_some_and(|c| {
                c.endpoints == moved.endpoints
                    && c.status == "UP"
                    && c.properties == props(&[("zone", "b"), (ORIGIN, "dc1")])
            })
        },
    );
    let replaced = single_copy(&w, 1).expect("one copy");
    w.check(is_copy_id(&replaced.instance_id), || {
        format!("the replacement's id is not syncer- + 32 hex: {replaced}")
    });
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 1 && dc1[0].instance_id == iid, || {
        format!(
            "after all these changes dc1 should still hold only {iid}:\n{}",
            show(&dc1)
        )
    });
    let dc2 = w.reg(1).list();
    w.check(dc2.len() == 1, || {
        format!("dc2 should hold exactly the one copy:\n{}", show(&dc2))
    });

    // Deregistered: the copy goes.
    w.reg(0).unregister(&sid, &iid);
    w.wait_until("the copy to be removed from dc2", SYNC_DEADLINE, |w| {
        w.reg(1).instances().is_ok_and(|l| l.is_empty())
    });
    let dc1 = w.reg(0).list();
    w.check(dc1.is_empty(), || {
        format!(
            "dc1 should be empty after the deregistration:\n{}",
            show(&dc1)
        )
    });
}

#[test]
fn three_data_centres_mirror_each_other_without_copies_of_copies() {
    let mut w = World::start(3, &[]);
    let names = ["dc1", "dc2", "dc3"];
    let host = |dc: &str| format!("catalog-{dc}");
    let mut origins = Vec::new();
    for (i, dc) in names.iter().enumerate() {
        let sid = w.reg(i).create_service("shop", "catalog", "2.0.0");
        let endpoint = format!("rest://10.2.0.{}:8080", i + 1);
        let iid = w
            .reg(i)
            .register(&sid, &NewInstance::new(&host(dc), &endpoint));
        origins.push((sid, iid));
    }

    // Each data centre: its own instance and one copy from each other, marked with the data
    // centre that really holds the original.
    let converged = |w: &World| {
        (0..3).all(|i| {
            let Ok(list) = w.reg(i).instances() else {
                return false;
            };
            let locals: Vec<&Inst> = list.iter().filter(|x| !x.is_copy()).collect();
            let copies: Vec<&Inst> = list.iter().filter(|x| x.is_copy()).collect();
            let copy_origins: BTreeSet<&str> = copies.iter().filter_map(|c| c.origin()).collect();
            let expected: BTreeSet<&str> =
                names.iter().copied().filter(|dc| *dc != names[i]).collect();
            list.len() == 3
                && locals.len() == 1
                && locals[0].host_name == host(names[i])
                && copy_origins == expected
                && copies.iter().all(|c| {
                    is_copy_id(&c.instance_id)
                        && c.origin().is_some_and(|o| c.host_name == host(o))
                        && (c.app.as_str(), c.name.as_str(), c.version.as_str())
                            == ("shop", "catalog", "2.0.0")
                })
        })
    };
    w.wait_until(
        "every data centre to hold its instance and one copy from each other",
        SYNC_DEADLINE,
        converged,
    );

    // One more round trip of changes; then the counts must still be exact (no late echo).
    for (i, (sid, iid)) in origins.iter().enumerate() {
        w.reg(i).set_properties(sid, iid, &props(&[("round", "2")]));
    }
    w.wait_until(
        "every copy to carry the second round's properties",
        SYNC_DEADLINE,
        |w| {
            (0..3).all(|i| {
                let copies = w.reg(i).copies();
                copies.len() == 2
                    && copies
                        .iter()
                        .all(|c| c.properties.get("round").map(String::as_str) == Some("2"))
            })
        },
    );
    for (i, dc) in names.iter().enumerate() {
        let list = w.reg(i).list();
        w.check(list.len() == 3, || {
            format!(
                "{dc} should hold exactly 3 instances after the second round:\n{}",
                show(&list)
            )
        });
    }
    w.check(converged(&w), || {
        "the mesh no longer holds exactly one copy per origin after the second round".to_owned()
    });
}

#[test]
fn a_copy_deleted_behind_syncers_back_comes_back() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "cart", "1.0.0");
    let origin = NewInstance::new("cart-host", "rest://10.3.0.1:8080");
    w.reg(0).register(&sid, &origin);
    w.wait_until("a copy in dc2", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some()
    });
    let copy = single_copy(&w, 1).expect("one copy");

    w.reg(1).unregister(&copy.service_id, &copy.instance_id);
    let after = w.reg(1).copies();
    w.check(after.is_empty(), || {
        format!(
            "the copy should be gone right after the DELETE:\n{}",
            show(&after)
        )
    });

    w.wait_until("the copy to be registered again", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some_and(|c| {
            c.origin() == Some("dc1")
                && c.host_name == origin.host_name
                && c.endpoints == origin.endpoints
        })
    });
    let back = single_copy(&w, 1).expect("one copy");
    w.check(is_copy_id(&back.instance_id), || {
        format!("the new copy's id is not syncer- + 32 hex: {back}")
    });
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 1, || {
        format!("dc1 should hold only its own instance:\n{}", show(&dc1))
    });
}

#[test]
fn a_killed_syncer_restarts_without_duplicating_copies() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "stock", "1.0.0");
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = Vec::new();
    for n in 1..=2 {
        let new = NewInstance::new(&format!("stock-{n}"), &format!("rest://10.4.0.{n}:8080"));
        ids.push(w.reg(0).register(&sid, &new));
        hosts.insert(new.host_name.clone(), new.endpoints.clone());
    }
    w.wait_until("copies of both instances in dc2", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &hosts)
    });
    let before: BTreeSet<String> = w
        .reg(1)
        .copies()
        .into_iter()
        .map(|c| c.instance_id)
        .collect();

    let status = w.stop_daemon(1, "KILL");
    assert!(!status.success(), "kill -9 ends the process: {status}");
    // A change while dc2's syncer is away.
    let third = NewInstance::new("stock-3", "rest://10.4.0.3:8080");
    ids.push(w.reg(0).register(&sid, &third));
    hosts.insert(third.host_name.clone(), third.endpoints.clone());

    w.start_daemon(1);
    w.wait_until(
        "dc2 to hold exactly one copy of each of the 3 instances after the restart",
        SYNC_DEADLINE,
        |w| copies_match(w, 1, "dc1", &hosts),
    );
    let after: BTreeSet<String> = w
        .reg(1)
        .copies()
        .into_iter()
        .map(|c| c.instance_id)
        .collect();
    w.check(before.is_subset(&after), || {
        format!(
            "the restarted syncer should keep the copy ids it derived before ({before:?}), now {after:?}"
        )
    });
    let dc2 = w.reg(1).list();
    w.check(dc2.len() == 3, || {
        format!("dc2 should hold exactly 3 copies:\n{}", show(&dc2))
    });

    // New changes still flow, and the counts stay exact.
    let fourth = NewInstance::new("stock-4", "rest://10.4.0.4:8080");
    w.reg(0).register(&sid, &fourth);
    hosts.insert(fourth.host_name.clone(), fourth.endpoints.clone());
    w.reg(0).set_status(&sid, &ids[0], "DOWN");
    w.wait_until(
        "the fourth instance and the status change to reach dc2",
        SYNC_DEADLINE,
        |w| {
            copies_match(w, 1, "dc1", &hosts)
                && w.reg(1)
                    .copies()
                    .iter()
                    .any(|c| c.host_name == "stock-1" && c.status == "DOWN")
        },
    );
    let dc2 = w.reg(1).list();
    w.check(dc2.len() == 4, || {
        format!("dc2 should hold exactly 4 copies:\n{}", show(&dc2))
    });
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 4 && dc1.iter().all(|i| !i.is_copy()), || {
        format!("dc1 should hold only its own 4 instances:\n{}", show(&dc1))
    });
}

#[test]
fn copies_expire_when_their_origin_syncer_is_gone_and_return_with_it() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "billing", "1.0.0");
    let origin = NewInstance::new("billing-host", "rest://10.5.0.1:8080");
    w.reg(0).register(&sid, &origin);
    w.wait_until("a copy in dc2", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some()
    });

    let status = w.stop_daemon(0, "TERM");
    w.check(status.success(), || {
        format!("dc1's syncer should stop cleanly on SIGTERM: {status}")
    });
    // Grace 2 s, then the 3 s lease runs out.
    w.wait_until(
        "dc2's copy to expire after dc1's syncer stopped",
        SYNC_DEADLINE,
        |w| w.reg(1).instances().is_ok_and(|l| l.is_empty()),
    );
    // The registry dropped it by its lease: syncer itself removed nothing (an empty counter
    // family is not listed at all).
    let metrics = w.metrics(1);
    w.check(
        metric_sum(&metrics, "syncer_sync_removals_total", &[]) == 0.0,
        || {
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("syncer_sync_removals"))
                .collect();
            format!("the copy should expire by its lease, not be removed by syncer: {lines:#?}")
        },
    );

    w.start_daemon(0);
    w.wait_until(
        "the copy to come back once dc1's syncer is back",
        SYNC_DEADLINE,
        |w| {
            single_copy(w, 1).is_some_and(|c| {
                c.origin() == Some("dc1")
                    && c.host_name == origin.host_name
                    && c.endpoints == origin.endpoints
            })
        },
    );
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 1, || {
        format!("dc1 should hold only its own instance:\n{}", show(&dc1))
    });
    let dc2 = w.reg(1).list();
    w.check(dc2.len() == 1, || {
        format!("dc2 should hold exactly one copy:\n{}", show(&dc2))
    });
}

#[test]
fn a_registry_that_was_down_catches_up() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "search", "1.0.0");
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let first = NewInstance::new("search-1", "rest://10.6.0.1:8080");
    w.reg(0).register(&sid, &first);
    hosts.insert(first.host_name.clone(), first.endpoints.clone());
    w.wait_until("a copy in dc2", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &hosts)
    });

    w.reg_mut(1).stop();
    let second = NewInstance::new("search-2", "rest://10.6.0.2:8080");
    w.reg(0).register(&sid, &second);
    hosts.insert(second.host_name.clone(), second.endpoints.clone());
    // dc1 exported the new instance, and dc2's syncer met its missing registry.
    w.wait_until(
        "dc1 to export 2 instances and dc2's syncer to fail a registry call",
        SYNC_DEADLINE,
        |w| {
            let exported = metric_sum(&w.metrics(0), "syncer_sync_exported_instances", &[]);
            let m2 = w.metrics(1);
            let failed = metric_sum(&m2, "syncer_sync_registry_ops_total", &[])
                - metric_sum(&m2, "syncer_sync_registry_ops_total", &["outcome=\"ok\""]);
            (exported - 2.0).abs() < f64::EPSILON && failed > 0.0
        },
    );

    // Back on the same address, empty.
    w.reg_mut(1).start_again();
    w.wait_until(
        "dc2's new registry to get copies of both dc1 instances",
        SYNC_DEADLINE,
        |w| copies_match(w, 1, "dc1", &hosts),
    );

    // And it keeps following.
    let third = NewInstance::new("search-3", "rest://10.6.0.3:8080");
    w.reg(0).register(&sid, &third);
    hosts.insert(third.host_name.clone(), third.endpoints.clone());
    w.wait_until("the third instance to reach dc2", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &hosts)
    });
    let dc2 = w.reg(1).list();
    w.check(dc2.len() == 3, || {
        format!("dc2 should hold exactly 3 copies:\n{}", show(&dc2))
    });
    let dc1 = w.reg(0).list();
    w.check(dc1.len() == 3 && dc1.iter().all(|i| !i.is_copy()), || {
        format!("dc1 should hold only its own 3 instances:\n{}", show(&dc1))
    });
}

/// Regression (chaos suite, registry-restart fault): the origin's registry restarts empty and
/// its applications register again moments later (a registry answering from an empty view
/// while it loads its data looks the same to syncer). Every copy of them in the other data
/// centre stays through it: more than half of the origin vanishing in one answer is held
/// (`--removal-hold`), not passed on as removals and re-created seconds later.
#[test]
fn an_origin_registry_that_restarts_empty_does_not_flap_the_copies() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "cart", "1.0.0");
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let instances: Vec<NewInstance> = (0..12)
        .map(|n| {
            NewInstance::new(&format!("cart-{n}"), &format!("rest://10.7.0.{n}:8080"))
                .id(&format!("cart-instance-{n}"))
        })
        .collect();
    for new in &instances {
        w.reg(0).register(&sid, new);
        hosts.insert(new.host_name.clone(), new.endpoints.clone());
    }
    w.wait_until("twelve copies in dc2", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &hosts)
    });

    w.reg_mut(0).stop();
    w.reg_mut(0).start_again();
    // dc1's syncer reads its empty registry (and holds the removals), or passes them on.
    w.wait_until(
        "dc1's syncer to see its registry empty",
        SYNC_DEADLINE,
        |w| {
            metric_sum(&w.metrics(0), "syncer_sync_removals_held", &[]) > 0.0
                || w.reg(1).copies().len() < 12
        },
    );
    // The applications notice and register again, with their ids.
    let sid = w.reg(0).create_service("shop", "cart", "1.0.0");
    for new in &instances {
        w.reg(0).register(&sid, new);
    }
    // Long enough for dc1's syncer to read the full registry again and push what it saw.
    let watched = std::time::Instant::now();
    while watched.elapsed() < std::time::Duration::from_secs(3) {
        let copies = w.reg(1).copies().len();
        w.check(copies == 12, || {
            format!("dc2 lost copies while dc1's registry restarted: {copies} of 12")
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    w.wait_until("the copies still match", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &hosts)
    });
    w.check(
        w.metrics(0).contains("syncer_sync_exported_instances 12"),
        || "dc1 exports its twelve instances".to_owned(),
    );
}

/// Every key and value under `prefix` in the etcd at `endpoint`.
fn etcd_read(rt: &tokio::runtime::Runtime, endpoint: &str, prefix: &str) -> Vec<(String, String)> {
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect to etcd");
        let reply = client
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("read etcd");
        reply
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    })
}

#[test]
fn the_etcd_store_keeps_the_mappings() {
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();
    let mut w = World::start(2, &["--etcd-endpoints", &endpoint]);
    let sid = w.reg(0).create_service("shop", "payments", "1.0.0");
    let origin = NewInstance::new("payments-host", "rest://10.7.0.1:8080");
    let iid = w.reg(0).register(&sid, &origin);
    w.wait_until("a copy in dc2", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some_and(|c| c.host_name == origin.host_name)
    });
    let copy = single_copy(&w, 1).expect("one copy");

    // The mapping is written before the copy is registered, so it is there now.
    let mappings = etcd_read(&w.rt, &endpoint, "/syncer/v2/dc2/mappings/");
    let expected_key = format!("/syncer/v2/dc2/mappings/dc1/{}", copy.instance_id);
    w.check(mappings.len() == 1 && mappings[0].0 == expected_key, || {
        format!("etcd should hold exactly the mapping {expected_key}, holds {mappings:?}")
    });
    let value: serde_json::Value =
        serde_json::from_str(&mappings[0].1).expect("the mapping is JSON");
    w.check(
        value["origin"] == "dc1"
            && value["origin_instance_id"] == iid.as_str()
            && value["origin_service_id"] == sid.as_str()
            && value["instance_id"] == copy.instance_id.as_str()
            && value["service_id"] == copy.service_id.as_str(),
        || format!("the mapping does not name origin {iid} and copy {copy}: {value}"),
    );
    let dc1_mappings = etcd_read(&w.rt, &endpoint, "/syncer/v2/dc1/mappings/");
    w.check(dc1_mappings.is_empty(), || {
        format!("dc1 mirrors nothing, yet etcd holds mappings for it: {dc1_mappings:?}")
    });
    let redb = w.dcs[1].data_dir.join("mappings.redb");
    w.check(!redb.exists(), || {
        format!(
            "with --etcd-endpoints no embedded store should be written ({} exists)",
            redb.display()
        )
    });
    drop(etcd);
}

#[test]
fn a_malformed_push_is_refused_and_counted() {
    use syncer::rpc::proto::peer_client::PeerClient;
    use syncer::rpc::proto::{Change, PushRequest, SyncInstance, SyncService, Upsert, change};

    let mut w = World::start(2, &[]);
    let rpc = w.node(1).rpc.clone();

    let service = SyncService {
        service_id: "svc-1".into(),
        app: "shop".into(),
        name: "intruder".into(),
        version: "1.0.0".into(),
        status: "UP".into(),
        domain_project: "default/default".into(),
        ..SyncService::default()
    };
    let instance = |id: &str| SyncInstance {
        instance_id: id.into(),
        service_id: "svc-1".into(),
        endpoints: vec!["rest://10.8.0.1:8080".into()],
        host_name: "intruder-host".into(),
        status: "UP".into(),
        domain_project: "default/default".into(),
        ..SyncInstance::default()
    };
    let upsert = |seq: u64, id: &str| Change {
        seq,
        observed_ms: 1,
        kind: Some(change::Kind::Upsert(Upsert {
            service: Some(service.clone()),
            instance: Some(instance(id)),
        })),
    };
    let push = |origin: &str, changes: Vec<Change>| PushRequest {
        origin: origin.into(),
        epoch: 1,
        from_seq: 0,
        to_seq: changes.last().map_or(0, |c| c.seq),
        changes,
    };
    let cases = [
        (
            "an empty origin",
            push("", vec![upsert(1, "i-1")]),
            "origin",
        ),
        (
            "an instance without an id",
            push("dc9", vec![upsert(1, "")]),
            "instance_id",
        ),
        (
            "non-consecutive sequences",
            push("dc9", vec![upsert(1, "i-1"), upsert(3, "i-3")]),
            "seq",
        ),
    ];

    let mut client = w.rt.block_on(async {
        PeerClient::connect(format!("http://{rpc}"))
            .await
            .expect("connect to dc2's rpc address")
    });
    for (n, (what, request, field)) in cases.iter().enumerate() {
        let deadline = std::time::Instant::now() + SYNC_DEADLINE;
        let status = loop {
            let result =
                w.rt.block_on(client.push(tonic::Request::new(request.clone())));
            match result {
                // The engine is still starting (only possible before the first answer).
                Err(s) if s.code() == tonic::Code::Unavailable && n == 0 => {
                    if std::time::Instant::now() > deadline {
                        w.fail(&format!(
                            "Push still unavailable after {SYNC_DEADLINE:?}: {s}"
                        ));
                    }
                    std::thread::sleep(support::sync::POLL);
                }
                other => break other,
            }
        };
        match status {
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                w.check(s.message().contains(field), || {
                    format!("the refusal of {what} should name {field}: {s:?}")
                });
            }
            other => w.fail(&format!(
                "a push with {what} should be refused as invalid_argument, got {other:?}"
            )),
        }
    }

    let metrics = w.metrics(1);
    let rejected = metric_sum(
        &metrics,
        "syncer_sync_rpc_rejected_total",
        &["rpc=\"push\""],
    );
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("syncer_sync_rpc_rejected"))
        .collect();
    w.check((rejected - 3.0).abs() < f64::EPSILON, || {
        format!(
            "syncer_sync_rpc_rejected_total{{rpc=\"push\"}} should count 3 refusals: {lines:#?}"
        )
    });
    let intruders: Vec<Inst> = w
        .reg(1)
        .list()
        .into_iter()
        .filter(|i| i.host_name == "intruder-host")
        .collect();
    w.check(intruders.is_empty(), || {
        format!(
            "nothing of a refused push may reach the registry:\n{}",
            show(&intruders)
        )
    });

    // The daemon keeps working.
    let sid = w.reg(0).create_service("shop", "after", "1.0.0");
    let origin = NewInstance::new("after-host", "rest://10.8.0.2:8080");
    w.reg(0).register(&sid, &origin);
    w.wait_until(
        "a registration after the refused pushes to reach dc2",
        SYNC_DEADLINE,
        |w| {
            single_copy(w, 1)
                .is_some_and(|c| c.host_name == origin.host_name && c.origin() == Some("dc1"))
        },
    );
    let exited = w.dcs[1]
        .node
        .as_mut()
        .map(|n| n.daemon.child.try_wait().expect("try_wait"));
    w.check(matches!(exited, Some(None)), || {
        format!("dc2's syncer should still run: {exited:?}")
    });
}

/// Hostile peers (issue 20): a member of dc3 pushing as dc1, a replay of an old push of dc1
/// (an older epoch, then the current one from an older sequence) and a push that claims to
/// come from the receiver's own data centre are refused and counted, and nothing of them
/// reaches the registry; the real dc1 keeps syncing.
#[test]
fn hostile_pushes_are_refused_and_counted() {
    use syncer::rpc::proto::peer_client::PeerClient;
    use syncer::rpc::proto::{Change, PushRequest, SyncInstance, SyncService, Upsert, change};

    let mut w = World::start(3, &[]);
    let sid = w.reg(0).create_service("shop", "real", "1.0.0");
    let real = NewInstance::new("real-host", "rest://10.8.0.1:8080");
    w.reg(0).register(&sid, &real);
    w.wait_until("dc1's instance to reach dc2", SYNC_DEADLINE, |w| {
        single_copy(w, 1).is_some_and(|c| c.host_name == real.host_name)
    });
    let rpc = w.node(1).rpc.clone();

    let service = SyncService {
        service_id: "svc-evil".into(),
        app: "shop".into(),
        name: "intruder".into(),
        version: "1.0.0".into(),
        status: "UP".into(),
        domain_project: "default/default".into(),
        ..SyncService::default()
    };
    let upsert = |seq: u64| Change {
        seq,
        observed_ms: 1,
        kind: Some(change::Kind::Upsert(Upsert {
            service: Some(service.clone()),
            instance: Some(SyncInstance {
                instance_id: format!("evil-{seq}"),
                service_id: "svc-evil".into(),
                endpoints: vec!["rest://10.66.0.1:8080".into()],
                host_name: "intruder-host".into(),
                status: "UP".into(),
                domain_project: "default/default".into(),
                ..SyncInstance::default()
            }),
        })),
    };
    let push = |origin: &str, epoch: u64, from_seq: u64| PushRequest {
        origin: origin.into(),
        epoch,
        from_seq,
        to_seq: from_seq + 1,
        changes: vec![upsert(from_seq + 1)],
    };
    // A client calling from an address of its own choosing (dc3's member is on 127.0.0.3).
    let client_from = |w: &World, last: u8| {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{rpc}"))
            .expect("an rpc URI")
            .local_address(Some(std::net::IpAddr::from([127, 0, 0, last])));
        w.rt.block_on(async { endpoint.connect().await.map(PeerClient::new) })
            .expect("connect to dc2's rpc address")
    };

    // (c) A member of dc3 claims to be dc1.
    let mut from_dc3 = client_from(&w, 3);
    let deadline = std::time::Instant::now() + SYNC_DEADLINE;
    let refused = loop {
        // Until dc2 has heard of dc3's member, the push is judged on its contents (an
        // epoch-1 push is never applied: dc2's cursor for dc1 is of a later epoch).
        match w.rt.block_on(from_dc3.push(push("dc1", 1, 0))) {
            Ok(reply) if !reply.get_ref().applied && std::time::Instant::now() < deadline => {
                std::thread::sleep(support::sync::POLL);
            }
            other => break other,
        }
    };
    match refused {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            w.check(
                s.message().contains("dc3") && s.message().contains("push.origin"),
                || format!("the refusal should name the origin and dc3: {s:?}"),
            );
        }
        other => w.fail(&format!(
            "dc3 pushing as dc1 should be refused, got {other:?}"
        )),
    }

    // (b) Replays of dc1's pushes from dc1's own address: an older epoch, then the current
    // epoch from before the cursor. Neither is applied; the reply tells the real cursor.
    let mut from_dc1 = client_from(&w, 1);
    let cursor = match w.rt.block_on(from_dc1.push(push("dc1", 1, 0))) {
        Ok(reply) => {
            let reply = reply.into_inner();
            w.check(!reply.applied, || {
                format!("a push of epoch 1 was applied: {reply:?}")
            });
            w.check(reply.epoch > 1 && reply.seq >= 1, || {
                format!("the reply should tell dc2's real cursor for dc1: {reply:?}")
            });
            reply
        }
        Err(s) => w.fail(&format!("a replay is answered, not refused: {s:?}")),
    };
    let replay = push("dc1", cursor.epoch, cursor.seq - 1);
    match w.rt.block_on(from_dc1.push(replay)) {
        Ok(reply) => {
            let reply = reply.into_inner();
            w.check(!reply.applied, || {
                format!("an old sequence was applied: {reply:?}")
            });
        }
        Err(s) => w.fail(&format!("a replay is answered, not refused: {s:?}")),
    }

    // (c) A push that claims to come from dc2 itself.
    match w.rt.block_on(from_dc1.push(push("dc2", cursor.epoch, 0))) {
        Err(s) if s.code() == tonic::Code::InvalidArgument => {}
        other => w.fail(&format!(
            "a push as dc2 to dc2 should be refused, got {other:?}"
        )),
    }

    // (a) Garbage where a `PushRequest` should be: not protobuf, a string that is not UTF-8,
    // a message cut short. The decoder refuses each before the engine sees it.
    let garbage: [Vec<u8>; 4] = [
        vec![0xff; 64],
        // Field 1 (origin), 3 bytes: not UTF-8.
        vec![0x0a, 3, 0xc3, 0x28, 0xff],
        // Field 5 (changes) announcing 200 bytes and carrying 2.
        vec![0x2a, 0xc8, 0x01, 0x08, 0x01],
        (0u32..512)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    ];
    for bytes in garbage {
        let answer =
            w.rt.block_on(raw::call(&rpc, "/syncer.v1.Peer/Push", bytes.clone()));
        match answer {
            Err(s) if s.code() != tonic::Code::Ok => {}
            other => w.fail(&format!(
                "garbage {bytes:02x?} should be refused, got {other:?}"
            )),
        }
    }

    let metrics = w.metrics(1);
    let count = |name: &str, labels: &[&str]| metric_sum(&metrics, name, labels);
    let rejected = |reason: &str| {
        count(
            "syncer_sync_rpc_rejected_total",
            &["rpc=\"push\"", &format!("reason=\"{reason}\"")],
        )
    };
    let (mismatch, own) = (rejected("origin_mismatch"), rejected("own_origin"));
    let out_of_order = count(
        "syncer_sync_transfers_total",
        &["op=\"push_received\"", "outcome=\"out_of_order\""],
    );
    w.check(mismatch == 1.0 && own == 1.0 && out_of_order >= 2.0, || {
        format!(
            "counted: origin_mismatch {mismatch}, own_origin {own}, out_of_order {out_of_order}:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("rejected") || l.contains("push_received"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let intruders: Vec<Inst> = w
        .reg(1)
        .list()
        .into_iter()
        .filter(|i| i.host_name == "intruder-host")
        .collect();
    w.check(intruders.is_empty(), || {
        format!(
            "nothing of a refused push may reach the registry:\n{}",
            show(&intruders)
        )
    });

    // The real dc1 keeps syncing to dc2 (its pushes come from its own address).
    let sid = w.reg(0).create_service("shop", "after", "1.0.0");
    let after = NewInstance::new("after-host", "rest://10.8.0.2:8080");
    w.reg(0).register(&sid, &after);
    w.wait_until(
        "a registration after the hostile pushes to reach dc2 and dc3",
        SYNC_DEADLINE,
        |w| {
            [1, 2].iter().all(|&i| {
                w.reg(i)
                    .copies()
                    .iter()
                    .any(|c| c.host_name == after.host_name && c.origin() == Some("dc1"))
            })
        },
    );
}

#[test]
fn copies_left_without_mappings_are_adopted_not_duplicated() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "catalog", "1.0.0");
    let mut hosts = BTreeMap::new();
    for k in 1..=2 {
        let new = NewInstance::new(&format!("catalog-{k}"), &format!("rest://10.8.0.{k}:8080"));
        w.reg(0).register(&sid, &new);
        hosts.insert(new.host_name.clone(), new.endpoints.clone());
    }
    w.wait_until("two copies in dc2", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &hosts)
    });
    let before: BTreeSet<String> = w
        .reg(1)
        .copies()
        .into_iter()
        .map(|c| c.instance_id)
        .collect();

    // A crash that loses the mapping table: the copies stay in the registry, marked.
    w.stop_daemon(1, "KILL");
    let store = w.dcs[1].data_dir.join("mappings.redb");
    std::fs::remove_file(&store).expect("remove the mapping store");
    w.start_daemon(1);
    w.wait_until("dc2's syncer to adopt both copies", SYNC_DEADLINE, |w| {
        metric_sum(
            &w.metrics(1),
            "syncer_sync_copies",
            &["origin=\"dc1\"", "state=\"mapped\""],
        ) == 2.0
    });
    let after: BTreeSet<String> = w
        .reg(1)
        .copies()
        .into_iter()
        .map(|c| c.instance_id)
        .collect();
    w.check(before == after, || {
        format!("the adopted copies should be the same ones: before {before:?}, after {after:?}")
    });
    let removed = metric_sum(&w.metrics(1), "syncer_sync_removals_total", &[]);
    w.check(removed == 0.0, || {
        format!("nothing should have been removed, removals = {removed}")
    });
}

#[test]
fn the_removal_cap_pauses_mass_removals() {
    let mut w = World::start(2, &["--removal-cap", "2"]);
    let sid = w.reg(0).create_service("shop", "search", "1.0.0");
    let mut ids = Vec::new();
    let mut hosts = BTreeMap::new();
    for k in 1..=5 {
        let new = NewInstance::new(&format!("search-{k}"), &format!("rest://10.9.0.{k}:8080"));
        ids.push(w.reg(0).register(&sid, &new));
        hosts.insert(new.host_name.clone(), new.endpoints.clone());
    }
    w.wait_until("five copies in dc2", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &hosts)
    });
    for id in &ids {
        w.reg(0).unregister(&sid, id);
    }
    // Two removals pass within the minute; the other three wait, counted.
    w.wait_until("the cap to pause removals", SYNC_DEADLINE, |w| {
        let text = w.metrics(1);
        metric_sum(&text, "syncer_sync_removals_total", &[]) == 2.0
            && metric_sum(&text, "syncer_sync_removals_paused_total", &[]) >= 3.0
    });
    let left = w.reg(1).copies().len();
    w.check(left == 3, || {
        format!("three copies should wait for the cap, found {left}")
    });
    // The log line follows the metric through the daemon's stderr: poll for it.
    let deadline = std::time::Instant::now() + SYNC_DEADLINE;
    loop {
        let logged = w.dcs[1].node.as_mut().is_some_and(|n| {
            n.daemon.drain();
            n.daemon.log().contains("removal cap reached")
        });
        if logged {
            break;
        }
        if std::time::Instant::now() > deadline {
            w.fail("the pause should be logged loudly");
        }
        std::thread::sleep(support::sync::POLL);
    }
}

/// The body of a service properties PUT for `properties`, as Service Center measures it.
fn put_body_len(properties: &BTreeMap<String, String>) -> usize {
    serde_json::json!({ "properties": properties })
        .to_string()
        .len()
}

/// Service Center caps the service properties PUT at 3 KiB (its create at 2 MiB), and the dev
/// registry too. A service created with larger properties is mirrored (its properties carried
/// in the create body) next to a normal one; a later change that fits the origin's PUT but not
/// the copy's (syncer's mark added) is refused in dc2: reported once (metric, `/health`
/// degraded with the reason, a warning) and not sent again, while the copies of both services
/// keep being registered and removed (issue 15 item 1).
#[test]
fn a_service_over_the_properties_cap_does_not_hold_back_the_others() {
    const CAP: usize = 3 * 1024;
    let mut w = World::start(2, &[]);
    let big_props: BTreeMap<String, String> = [
        ("contract".to_owned(), "x".repeat(2500)),
        ("contract-b".to_owned(), "z".repeat(2500)),
    ]
    .into();
    assert!(put_body_len(&big_props) > CAP);
    let big = w
        .reg(0)
        .create_service_with("shop", "contracts", "1.0.0", &big_props);
    let small = w.reg(0).create_service("shop", "orders", "1.0.0");
    let big_1 = NewInstance::new("contracts-1", "rest://10.7.0.1:8080");
    let big_1_id = w.reg(0).register(&big, &big_1);
    let small_1 = NewInstance::new("orders-1", "rest://10.7.0.2:8080");
    let small_1_id = w.reg(0).register(&small, &small_1);
    let hosts = |list: &[&NewInstance]| -> BTreeMap<String, Vec<String>> {
        list.iter()
            .map(|n| (n.host_name.clone(), n.endpoints.clone()))
            .collect()
    };
    let first = hosts(&[&big_1, &small_1]);
    w.wait_until("both services' copies in dc2", SYNC_DEADLINE, |w| {
        copies_match(w, 1, "dc1", &first)
    });
    let mirrored = w.reg(1).service_properties("contracts").unwrap_or_default();
    w.check(
        mirrored.get("contract") == big_props.get("contract") && mirrored.len() == 3,
        || format!("dc2's service should be created with dc1's large properties: {mirrored:?}"),
    );

    // Trimmed to what dc1's PUT takes; with the mark, dc2's PUT would be over the cap.
    let mut fits: BTreeMap<String, String> = [("contract".to_owned(), String::new())].into();
    let room = CAP - put_body_len(&fits);
    fits.insert("contract".into(), "y".repeat(room - 5));
    let (status, text) = w.reg(0).set_service_properties(&big, &fits);
    w.check(status == 200, || {
        format!(
            "dc1 should take {} bytes: {status} {text}",
            put_body_len(&fits)
        )
    });
    w.wait_until(
        "dc2's syncer to report the refused properties",
        SYNC_DEADLINE,
        |w| {
            let reason = "reason=\"properties_too_large\"";
            w.health(1).contains("\"degraded\"")
                && w.health(1).contains("properties_too_large")
                && metric_sum(
                    &w.metrics(1),
                    "syncer_sync_service_failures_total",
                    &[reason],
                ) == 1.0
        },
    );

    // Both services' copies keep syncing.
    let big_2 = NewInstance::new("contracts-2", "rest://10.7.0.3:8080");
    w.reg(0).register(&big, &big_2);
    let small_2 = NewInstance::new("orders-2", "rest://10.7.0.4:8080");
    w.reg(0).register(&small, &small_2);
    w.reg(0).unregister(&big, &big_1_id);
    w.reg(0).unregister(&small, &small_1_id);
    let second = hosts(&[&big_2, &small_2]);
    w.wait_until(
        "new copies registered and old ones removed",
        SYNC_DEADLINE,
        |w| copies_match(w, 1, "dc1", &second),
    );
    // Reported once: the same properties were not sent again meanwhile.
    let text = w.metrics(1);
    let puts = metric_sum(
        &text,
        "syncer_sync_registry_ops_total",
        &["op=\"set_service_properties\""],
    );
    let refusals = metric_sum(&text, "syncer_sync_service_failures_total", &[]);
    w.check(puts == 1.0 && refusals == 1.0, || {
        format!("one PUT, one refusal expected: {puts} PUTs, {refusals} refusals")
    });
}

/// Registry writes a syncer made so far (every op that changes the registry), from its
/// `syncer_registry_requests_total`.
fn registry_writes(text: &str) -> f64 {
    [
        "ensure_service",
        "set_service_properties",
        "register",
        "set_status",
        "set_instance_properties",
        "unregister",
    ]
    .iter()
    .map(|op| {
        metric_sum(
            text,
            "syncer_registry_requests_total",
            &[&format!("op=\"{op}\"")],
        )
    })
    .sum()
}

/// The copy in registry `i` of the instance with host name `host`, if there is one.
fn copy_of(w: &World, i: usize, host: &str) -> Option<Inst> {
    w.reg(i).copies().into_iter().find(|c| c.host_name == host)
}

/// dc1 runs Service Center 2.x with RBAC (a token of 4 s, so the syncer renews it during the
/// test), an inner property and leases scaled so that 2.x's 5 s × 3 minimum is 3 s; dc2 runs
/// 1.4.8. Instances travel both ways with their status, properties and removal; SC 2.x's own
/// instance shows the inner property (the adapter learns it there), which never reaches dc2
/// and never makes the syncers rewrite copies: once converged, neither syncer writes again
/// while the copies in dc1 keep their lease (issue 15, the two-data-centre test).
#[test]
fn an_sc_2_origin_with_rbac_and_a_1_4_8_target_sync_both_ways() {
    use support::sync::DcSetup;
    use syncer::devreg::{DevRegistryConfig, RbacConfig};

    let mut dc1 = DevRegistryConfig::real_sc_2();
    dc1.rbac = Some(RbacConfig {
        token_ttl: std::time::Duration::from_secs(4),
        ..RbacConfig::new("syncer", "s3cret-pw")
    });
    dc1.inner_properties = props(&[("engine", "dc1")]);
    dc1.lease_scale = 0.15;
    let setups = vec![
        DcSetup {
            registry: dc1,
            flags: ["--sc-user", "syncer", "--sc-password", "s3cret-pw"]
                .map(str::to_owned)
                .to_vec(),
            ..DcSetup::default()
        },
        DcSetup {
            registry: DevRegistryConfig::real_sc_1_4_8(),
            ..DcSetup::default()
        },
    ];
    let mut w = World::start_each(setups, &[]);

    // SC 2.x registers itself with its inner properties, as it does every instance.
    let health = w.reg(0).get_json("/health");
    let own = health
        .as_ref()
        .ok()
        .and_then(|h| h["instances"].as_array().cloned())
        .unwrap_or_default();
    w.check(
        !own.is_empty()
            && own
                .iter()
                .all(|i| i["properties"]["engine"].as_str() == Some("dc1")),
        || format!("SC's own instances should carry engine=dc1: {health:?}"),
    );

    // dc1 → dc2, without dc1's inner property.
    let orders = w.reg(0).create_service("shop", "orders", "1.0.0");
    let o1 = w.reg(0).register(
        &orders,
        &NewInstance::new("orders-1", "rest://10.1.0.1:8080").property("zone", "a"),
    );
    // dc2 → dc1.
    let pay = w.reg(1).create_service("shop", "pay", "1.0.0");
    let p1 = w.reg(1).register(
        &pay,
        &NewInstance::new("pay-1", "rest://10.2.0.1:8080").property("zone", "b"),
    );
    w.wait_until("copies in both data centres", SYNC_DEADLINE, |w| {
        copy_of(w, 1, "orders-1")
            .is_some_and(|c| c.properties == props(&[("zone", "a"), (ORIGIN, "dc1")]))
            && copy_of(w, 0, "pay-1").is_some_and(|c| {
                c.properties == props(&[("zone", "b"), (ORIGIN, "dc2"), ("engine", "dc1")])
            })
    });

    // Changes both ways.
    w.reg(0).set_status(&orders, &o1, "DOWN");
    w.reg(0)
        .set_properties(&orders, &o1, &props(&[("zone", "c"), ("weight", "3")]));
    w.reg(1).set_status(&pay, &p1, "OUTOFSERVICE");
    w.reg(1).set_properties(&pay, &p1, &props(&[("zone", "d")]));
    w.wait_until("the changes in both data centres", SYNC_DEADLINE, |w| {
        copy_of(w, 1, "orders-1").is_some_and(|c| {
            c.status == "DOWN"
                && c.properties == props(&[("zone", "c"), ("weight", "3"), (ORIGIN, "dc1")])
        }) && copy_of(w, 0, "pay-1").is_some_and(|c| {
            c.status == "OUTOFSERVICE"
                && c.properties == props(&[("zone", "d"), (ORIGIN, "dc2"), ("engine", "dc1")])
        })
    });

    // Converged: for longer than a 2.x lease (3 s here) and a token's life, the copy in dc1
    // stays and neither syncer writes to its registry.
    let writes = |w: &World| registry_writes(&w.metrics(0)) + registry_writes(&w.metrics(1));
    let before = writes(&w);
    let copy_id = copy_of(&w, 0, "pay-1").map(|c| c.instance_id);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let now = copy_of(&w, 0, "pay-1").map(|c| c.instance_id);
        w.check(now.is_some() && now == copy_id, || {
            format!("the copy in dc1 should keep its lease: was {copy_id:?}, now {now:?}")
        });
        let after = writes(&w);
        w.check(after == before, || {
            format!("converged syncers should not write: {before} writes, then {after}")
        });
        std::thread::sleep(support::sync::POLL * 10);
    }

    // The token was renewed (two logins at least) and no call was refused for it.
    let text = w.metrics(0);
    let logins = metric_sum(
        &text,
        "syncer_registry_requests_total",
        &["op=\"login\"", "outcome=\"ok\""],
    );
    let errors = metric_sum(&text, "syncer_registry_errors_total", &[]);
    w.check(logins >= 2.0 && errors == 0.0, || {
        format!("the token should be renewed without errors: {logins} logins, {errors} errors")
    });

    // Removal both ways.
    w.reg(0).unregister(&orders, &o1);
    w.reg(1).unregister(&pay, &p1);
    w.wait_until("both copies removed", SYNC_DEADLINE, |w| {
        w.reg(0).copies().is_empty() && w.reg(1).copies().is_empty()
    });
}

/// SC serves its admin dump from a cache fed by an etcd watch; after a failover the node that
/// answers may trail and miss instances the others already show. Here every dump of dc1 is
/// answered by a node that holds nothing of dc1's services (a forwarder sends dumps there)
/// while finds and listings still show them: the feed asks again before believing the dump,
/// so the copies in dc2 stay, and a real removal still arrives (issue 15 item 5).
#[test]
fn a_dump_from_a_lagging_node_does_not_remove_copies() {
    use support::split::DumpSplit;
    use support::sync::{DcSetup, Registry};

    let mut w = World::prepare_each(vec![DcSetup::default(), DcSetup::default()], &[]);
    let config = w.dir.path().join("dc1.yaml");
    std::fs::write(&config, "ticker_interval: 1s\n").expect("write the configuration");
    let lagging_node = Registry::start(&w.rt, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let split = DumpSplit::start(&w.rt, w.reg(0).addr(), lagging_node.addr());
    w.dcs[0].sc_addr = Some(split.url());
    // One address in front of several nodes (a load balancer, here the forwarder): the
    // confirmation is asked for explicitly, as an operator of such a cluster does.
    w.dcs[0].flags = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "--sc-confirm-removal".to_owned(),
        "1s".to_owned(),
    ];
    w.start_daemon(0);
    w.start_daemon(1);

    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    let iid = w
        .reg(0)
        .register(&sid, &NewInstance::new("orders-1", "rest://10.1.0.1:8080"));
    w.wait_until("the copy in dc2", SYNC_DEADLINE, |w| {
        copy_of(w, 1, "orders-1").is_some()
    });

    split.set_lagging(true);
    let until = std::time::Instant::now() + SYNC_DEADLINE;
    while split.lagged_dumps() < 2 {
        w.check(std::time::Instant::now() < until, || {
            "two dumps from the lagging node expected".to_owned()
        });
        let copy = copy_of(&w, 1, "orders-1");
        let removals = metric_sum(&w.metrics(1), "syncer_sync_removals_total", &[]);
        w.check(copy.is_some() && removals == 0.0, || {
            format!("a lagging dump removed the copy: copy {copy:?}, {removals} removals")
        });
        std::thread::sleep(support::sync::POLL);
    }
    split.set_lagging(false);

    w.reg(0).unregister(&sid, &iid);
    w.wait_until("the copy removed", SYNC_DEADLINE, |w| {
        copy_of(w, 1, "orders-1").is_none()
    });
}

/// Service Center caps the instance properties PUT at 3 KiB. An origin instance whose
/// properties fit dc1's PUT but not the copy's (syncer's mark added) is refused in dc2: the
/// refusal is counted and shown in `/health` once, the same PUT is not sent again every
/// second, the other copies keep syncing, and a smaller change goes through at once and ends
/// the trouble (issue 15 item 1, for instances).
#[test]
fn a_refused_copy_backs_off_alone_and_is_reported() {
    const CAP: usize = 3 * 1024;
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    let big = w.reg(0).register(
        &sid,
        &NewInstance::new("orders-big", "rest://10.6.0.1:8080"),
    );
    let small = w.reg(0).register(
        &sid,
        &NewInstance::new("orders-small", "rest://10.6.0.2:8080"),
    );
    w.wait_until("both copies in dc2", SYNC_DEADLINE, |w| {
        copy_of(w, 1, "orders-big").is_some() && copy_of(w, 1, "orders-small").is_some()
    });

    // Fits dc1's PUT; with the copy's mark it does not fit dc2's.
    let mut fits: BTreeMap<String, String> = [("blob".to_owned(), String::new())].into();
    let room = CAP - put_body_len(&fits);
    fits.insert("blob".into(), "b".repeat(room - 5));
    w.reg(0).set_properties(&sid, &big, &fits);
    let refused_puts = |w: &World| {
        metric_sum(
            &w.metrics(1),
            "syncer_sync_registry_ops_total",
            &["op=\"set_properties\"", "outcome=\"refused\""],
        )
    };
    let reason = "reason=\"instance_properties_too_large\"";
    w.wait_until(
        "dc2's syncer to report the refused copy",
        SYNC_DEADLINE,
        |w| {
            let health = w.health(1);
            health.contains("\"degraded\"")
                && health.contains("instance_properties_too_large")
                && metric_sum(
                    &w.metrics(1),
                    "syncer_sync_service_failures_total",
                    &[reason],
                ) == 1.0
        },
    );

    // The other copy goes on; the refused PUT is not repeated meanwhile (back-off of 5 s).
    w.reg(0).set_status(&sid, &small, "DOWN");
    w.wait_until("the other copy to become DOWN", SYNC_DEADLINE, |w| {
        copy_of(w, 1, "orders-small").is_some_and(|c| c.status == "DOWN")
    });
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let puts = refused_puts(&w);
        w.check(puts == 1.0, || {
            format!("the refused PUT should be sent once within its back-off, sent {puts} times")
        });
        std::thread::sleep(support::sync::POLL * 5);
    }

    // A change that fits goes through at once and ends the trouble.
    w.reg(0)
        .set_properties(&sid, &big, &props(&[("blob", "small")]));
    w.wait_until(
        "the smaller properties in dc2, health ok",
        SYNC_DEADLINE,
        |w| {
            copy_of(w, 1, "orders-big")
                .is_some_and(|c| c.properties == props(&[("blob", "small"), (ORIGIN, "dc1")]))
                && !w.health(1).contains("instance_properties_too_large")
        },
    );
}

/// Service Center caps an instance registration body at 5 KiB. An origin instance registered
/// just under the cap cannot be copied (the copy's id, service id, lease and mark make it
/// longer): the refusal is reported once, the registration is not repeated every second, the
/// service's other copies are mirrored, and once the origin instance shrinks its copy is
/// registered at once.
#[test]
fn a_copy_over_the_registration_cap_backs_off_and_follows_a_smaller_origin() {
    const CAP: usize = 5 * 1024;
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    let body_len = |new: &NewInstance| {
        serde_json::json!({ "instance": {
            "hostName": new.host_name,
            "endpoints": new.endpoints,
            "status": "UP",
            "properties": new.properties,
        }})
        .to_string()
        .len()
    };
    // Two values: syncer's wire bounds take at most 4 KiB per value.
    let mut big = NewInstance::new("orders-big", "rest://10.5.0.1:8080")
        .property("blob", "")
        .property("blob2", "");
    let room = CAP - body_len(&big) - 8;
    big = big
        .property("blob", &"b".repeat(room / 2))
        .property("blob2", &"c".repeat(room - room / 2));
    assert!(body_len(&big) < CAP);
    let big_id = w.reg(0).register(&sid, &big);
    w.reg(0).register(
        &sid,
        &NewInstance::new("orders-small", "rest://10.5.0.2:8080"),
    );
    let reason = "reason=\"instance_too_large\"";
    w.wait_until(
        "the small copy and the big one reported",
        SYNC_DEADLINE,
        |w| {
            copy_of(w, 1, "orders-small").is_some()
                && w.health(1).contains("instance_too_large")
                && metric_sum(
                    &w.metrics(1),
                    "syncer_sync_service_failures_total",
                    &[reason],
                ) == 1.0
        },
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let tries = metric_sum(
            &w.metrics(1),
            "syncer_sync_registry_ops_total",
            &["op=\"register\"", "outcome=\"refused\""],
        );
        w.check(tries == 1.0, || {
            format!("the refused registration should be sent once within its back-off, sent {tries} times")
        });
        std::thread::sleep(support::sync::POLL * 5);
    }

    w.reg(0)
        .set_properties(&sid, &big_id, &props(&[("blob", "small")]));
    w.wait_until(
        "the big instance's copy once it is smaller",
        SYNC_DEADLINE,
        |w| copy_of(w, 1, "orders-big").is_some() && !w.health(1).contains("instance_too_large"),
    );
}

/// gRPC calls with raw bytes as the message, for garbage a well-behaved client cannot send.
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::http::uri::PathAndQuery;

    #[derive(Default)]
    struct Raw;

    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            Ok(Some(bytes.to_vec()))
        }
    }

    /// Calls `method` of the syncer at `addr` with `body` as the message.
    pub async fn call(addr: &str, method: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(e.to_string()))?
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        grpc.unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(method),
            Raw,
        )
        .await
        .map(tonic::Response::into_inner)
    }
}
