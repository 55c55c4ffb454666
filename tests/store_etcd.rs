//! The etcd mapping store against a real etcd (`tests/support/etcd.rs` starts one per test):
//! the store contract, the key layout, fencing, an etcd that goes away and comes back, and
//! undecodable values. Nothing sleeps for synchronisation: waits poll with a deadline.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};
use support::etcd::EtcdServer;
use syncer::store::contract::store_contract;
use syncer::store::{
    Cursor, EtcdStore, EtcdTimeouts, Fence, Group, Mapping, MappingStore, Op, StoreError,
};

/// How long a test waits for something that should happen soon.
const DEADLINE: Duration = Duration::from_secs(30);
/// The prefix the daemon would use for cluster `dc1`.
const PREFIX: &str = "/syncer/v2/dc1/";
/// Short timeouts, so that an unreachable etcd shows quickly.
const TIMEOUTS: EtcdTimeouts = EtcdTimeouts {
    connect: Duration::from_secs(1),
    request: Duration::from_secs(2),
};

async fn connect(server: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(&[server.url()], PREFIX.to_owned(), TIMEOUTS)
        .await
        .expect("connect the store")
}

async fn raw_client(server: &EtcdServer) -> Client {
    Client::connect([server.endpoint()], None)
        .await
        .expect("connect a raw etcd client")
}

fn mapping(origin: &str, instance_id: &str) -> Mapping {
    Mapping {
        origin: origin.into(),
        domain: "default".into(),
        project: "default".into(),
        origin_service_id: "s-origin".into(),
        origin_instance_id: format!("o-{instance_id}"),
        service_id: "s-local".into(),
        instance_id: instance_id.into(),
        fingerprint: "fp".into(),
        generation: 0,
        updated_ms: 1,
    }
}

fn put(m: &Mapping) -> Group {
    Group::from(Op::PutMapping(m.clone()))
}

#[tokio::test]
async fn etcd_store_passes_the_contract() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    assert_eq!(store.kind(), "etcd");
    store_contract(&store).await;
}

#[tokio::test]
async fn keys_follow_the_documented_layout_and_load_reads_only_its_sections() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    let mut raw = raw_client(&server).await;
    // Neighbours: another cluster's prefix and a key beside the three sections.
    raw.put("/syncer/v2/dc1-other/mappings/x/y", "not json", None)
        .await
        .unwrap();
    raw.put(format!("{PREFIX}leader"), "node-a", None)
        .await
        .unwrap();

    let m = mapping("dc/2", "i 1");
    let cursor = Cursor {
        epoch: 1,
        seq: 2,
        complete: true,
        updated_ms: 3,
    };
    store
        .commit(&[Group::new(vec![
            Op::PutMapping(m.clone()),
            Op::PutCursor {
                origin: "dc/2".into(),
                cursor,
            },
            Op::PutMeta {
                key: "schema".into(),
                value: "{\"v\":1}".into(),
            },
        ])])
        .await
        .unwrap();

    let reply = raw
        .get(
            format!("{PREFIX}mappings/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let [pair] = reply.kvs() else {
        panic!("expected one mapping key, got {:?}", reply.kvs());
    };
    assert_eq!(
        pair.key_str().unwrap(),
        "/syncer/v2/dc1/mappings/dc%2F2/i%201"
    );
    assert_eq!(serde_json::from_slice::<Mapping>(pair.value()).unwrap(), m);
    let reply = raw
        .get(format!("{PREFIX}cursors/dc%2F2"), None)
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(reply.kvs()[0].value()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"epoch": 1, "seq": 2, "complete": true, "updated_ms": 3})
    );
    let reply = raw.get(format!("{PREFIX}meta/schema"), None).await.unwrap();
    assert_eq!(reply.kvs()[0].value_str().unwrap(), "{\"v\":1}");

    let stored = store.load().await.unwrap();
    assert_eq!(stored.mappings, vec![m]);
    assert_eq!(stored.cursors["dc/2"], cursor);
    assert_eq!(stored.meta.len(), 1);
}

/// A fence on a key that does not exist: nothing is written.
#[tokio::test]
async fn fence_on_a_missing_key_fails_with_fenced() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    let mut raw = raw_client(&server).await;
    let lease = raw.lease_grant(60, None).await.unwrap().id();
    store.set_fence(Some(Fence {
        key: "/syncer/v2/dc1-leader".into(),
        lease_id: lease,
    }));

    let err = store
        .commit(&[put(&mapping("dc2", "i1"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(store.load().await.unwrap().mappings.is_empty());
}

/// A fence on a key another node's lease holds: nothing is written, not even by a batch of
/// several transactions.
#[tokio::test]
async fn fence_owned_by_another_lease_fails_with_fenced() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    let mut raw = raw_client(&server).await;
    let ours = raw.lease_grant(60, None).await.unwrap().id();
    let theirs = raw.lease_grant(60, None).await.unwrap().id();
    let key = "/syncer/v2/dc1-leader";
    raw.put(key, "node-b", Some(PutOptions::new().with_lease(theirs)))
        .await
        .unwrap();
    store.set_fence(Some(Fence {
        key: key.into(),
        lease_id: ours,
    }));

    let batch: Vec<Group> = (0..300)
        .map(|i| put(&mapping("dc2", &format!("i{i}"))))
        .collect();
    let err = store.commit(&batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
    assert!(store.load().await.unwrap().mappings.is_empty());
}

/// With the leader key on our lease, commits work; once the lease is gone they are fenced
/// again; without a fence they work regardless.
#[tokio::test]
async fn fence_owned_by_our_lease_lets_commits_through() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    let mut raw = raw_client(&server).await;
    let ours = raw.lease_grant(60, None).await.unwrap().id();
    let key = "/syncer/v2/dc1-leader";
    raw.put(key, "node-a", Some(PutOptions::new().with_lease(ours)))
        .await
        .unwrap();
    let fence = Fence {
        key: key.into(),
        lease_id: ours,
    };
    store.set_fence(Some(fence.clone()));
    assert_eq!(store.fence(), Some(fence));

    let batch: Vec<Group> = (0..300)
        .map(|i| put(&mapping("dc2", &format!("i{i}"))))
        .collect();
    store.commit(&batch).await.unwrap();
    assert_eq!(store.load().await.unwrap().mappings.len(), 300);

    raw.lease_revoke(ours).await.unwrap();
    let err = store
        .commit(&[put(&mapping("dc2", "late"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");

    store.set_fence(None);
    store.commit(&[put(&mapping("dc2", "late"))]).await.unwrap();
    assert_eq!(store.load().await.unwrap().mappings.len(), 301);
}

#[tokio::test]
async fn stopped_etcd_is_unavailable_within_the_timeout_and_recovers() {
    let mut server = EtcdServer::start();
    let store = connect(&server).await;
    let before = mapping("dc2", "before");
    store.commit(&[put(&before)]).await.unwrap();

    server.stop();
    // The timeout covers one request; allow the connect timeout and some slack on top.
    let bound = TIMEOUTS.request + TIMEOUTS.connect + Duration::from_secs(2);
    let started = Instant::now();
    let err = store
        .commit(&[put(&mapping("dc2", "during"))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.is_retryable(),
        "{err:?}"
    );
    assert!(
        started.elapsed() < bound,
        "commit took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < bound,
        "load took {:?}",
        started.elapsed()
    );

    server.restart();
    let after = mapping("dc2", "after");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match store.commit(&[put(&after)]).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(
                    Instant::now() < deadline,
                    "the store did not recover within {DEADLINE:?}: {e}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = store.load().await.unwrap();
    assert_eq!(stored.mappings, vec![after, before]);
}

#[tokio::test]
async fn undecodable_values_are_corrupt_and_named() {
    let server = EtcdServer::start();
    let store = connect(&server).await;
    let mut raw = raw_client(&server).await;

    let key = store.mapping_key("dc2", "i1");
    raw.put(key.as_str(), "not json", None).await.unwrap();
    match store.load().await {
        Err(StoreError::Corrupt { key: named, .. }) => assert_eq!(named, key),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A valid mapping under the wrong key is corrupt too.
    let other = serde_json::to_vec(&mapping("dc3", "i1")).unwrap();
    raw.put(key.as_str(), other, None).await.unwrap();
    let err = store.load().await.unwrap_err();
    assert!(err.to_string().contains(&key), "{err}");
    raw.delete(key.as_str(), None).await.unwrap();

    // A key that does not decode.
    let bad_key = format!("{PREFIX}mappings/dc2");
    raw.put(bad_key.as_str(), "{}", None).await.unwrap();
    match store.load().await {
        Err(StoreError::Corrupt { key: named, .. }) => assert_eq!(named, bad_key),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    raw.delete(bad_key.as_str(), None).await.unwrap();

    let cursor_key = store.cursor_key("dc2");
    raw.put(cursor_key.as_str(), "[1,2]", None).await.unwrap();
    match store.load().await {
        Err(StoreError::Corrupt { key: named, .. }) => assert_eq!(named, cursor_key),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    raw.delete(cursor_key.as_str(), None).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Default::default());
}
