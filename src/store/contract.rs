//! The contract every [`MappingStore`] must pass.
//!
//! `store_contract` drives a store through the trait alone and panics with a message on the
//! first broken promise. It expects an empty store (a fresh file, a fresh etcd prefix) and
//! leaves some data behind.

use std::collections::BTreeMap;

use super::{Cursor, Group, MAX_GROUP_OPS, Mapping, MappingStore, Op, StoreError, Stored};

/// How many mappings the bulk step writes in one batch.
const BULK_MAPPINGS: usize = 10_000;

fn mapping(origin: &str, instance_id: &str, fingerprint: &str) -> Mapping {
    Mapping {
        origin: origin.to_owned(),
        domain: "default".into(),
        project: "default".into(),
        origin_service_id: format!("svc-{origin}"),
        origin_instance_id: format!("orig-{instance_id}"),
        service_id: "local-svc".into(),
        instance_id: instance_id.to_owned(),
        fingerprint: fingerprint.to_owned(),
        generation: 0,
        updated_ms: 1_700_000_000_000,
    }
}

fn put(m: &Mapping) -> Op {
    Op::PutMapping(m.clone())
}

fn delete(m: &Mapping) -> Op {
    Op::DeleteMapping {
        origin: m.origin.clone(),
        instance_id: m.instance_id.clone(),
    }
}

async fn commit(store: &dyn MappingStore, batch: Vec<Group>, what: &str) {
    if let Err(e) = store.commit(&batch).await {
        panic!("{} store: commit of {what} failed: {e}", store.kind());
    }
}

async fn load(store: &dyn MappingStore, what: &str) -> Stored {
    match store.load().await {
        Ok(stored) => stored,
        Err(e) => panic!("{} store: load after {what} failed: {e}", store.kind()),
    }
}

/// Loads and compares the mappings with `expected` (in any order; the store must sort).
async fn expect_mappings(store: &dyn MappingStore, expected: &[&Mapping], what: &str) {
    let stored = load(store, what).await;
    let mut expected: Vec<Mapping> = expected.iter().map(|m| (*m).clone()).collect();
    expected.sort_by(|a, b| (&a.origin, &a.instance_id).cmp(&(&b.origin, &b.instance_id)));
    assert_eq!(
        stored.mappings,
        expected,
        "{} store: mappings after {what}",
        store.kind()
    );
}

async fn expect_invalid(store: &dyn MappingStore, batch: Vec<Group>, what: &str) {
    match store.commit(&batch).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!(
            "{} store: {what} must be rejected as invalid, got {other:?}",
            store.kind()
        ),
    }
}

/// Runs the whole contract against `store`, which must be empty.
///
/// # Panics
/// On the first behaviour that breaks the [`MappingStore`] contract.
pub async fn store_contract(store: &dyn MappingStore) {
    assert!(!store.kind().is_empty(), "kind is empty");

    // An empty store loads as empty; empty batches and groups are fine.
    assert_eq!(
        load(store, "nothing").await,
        Stored::default(),
        "{} store: a fresh store must be empty",
        store.kind()
    );
    commit(store, vec![], "an empty batch").await;
    commit(store, vec![Group::default()], "an empty group").await;

    // Put, put again (idempotent), overwrite.
    let m1 = mapping("dc2", "i-1", "fp1");
    commit(store, vec![put(&m1).into()], "a mapping").await;
    expect_mappings(store, &[&m1], "a put").await;
    commit(store, vec![put(&m1).into()], "the same mapping again").await;
    expect_mappings(store, &[&m1], "the same put twice").await;
    let m1b = Mapping {
        fingerprint: "fp2".into(),
        generation: 1,
        updated_ms: m1.updated_ms + 1,
        ..m1.clone()
    };
    commit(store, vec![put(&m1b).into()], "an overwrite").await;
    expect_mappings(store, &[&m1b], "an overwrite").await;

    // Several origins; delete, delete again, delete what never existed.
    let m2 = mapping("dc2", "i-2", "fp1");
    let m3 = mapping("dc3", "i-1", "fp1");
    commit(
        store,
        vec![put(&m2).into(), put(&m3).into()],
        "two more mappings",
    )
    .await;
    expect_mappings(store, &[&m1b, &m2, &m3], "three mappings").await;
    commit(store, vec![delete(&m2).into()], "a delete").await;
    expect_mappings(store, &[&m1b, &m3], "a delete").await;
    commit(store, vec![delete(&m2).into()], "the same delete again").await;
    let never = mapping("dc9", "never", "x");
    commit(
        store,
        vec![delete(&never).into()],
        "a delete of a missing key",
    )
    .await;
    expect_mappings(store, &[&m1b, &m3], "deletes of missing keys").await;

    // Names with separators and escape characters stay apart and come back unchanged.
    let odd_a = mapping("a/b", "c", "odd");
    let odd_b = mapping("a", "b/c", "odd");
    let odd_c = mapping("a%2Fb", "c", "odd");
    let odd_d = mapping("dc ü", "../i d%", "odd");
    commit(
        store,
        vec![Group::new(vec![
            put(&odd_a),
            put(&odd_b),
            put(&odd_c),
            put(&odd_d),
        ])],
        "mappings with odd names",
    )
    .await;
    expect_mappings(
        store,
        &[&m1b, &m3, &odd_a, &odd_b, &odd_c, &odd_d],
        "odd names",
    )
    .await;
    commit(
        store,
        vec![Group::new(vec![
            delete(&odd_a),
            delete(&odd_b),
            delete(&odd_c),
            delete(&odd_d),
        ])],
        "deletes of odd names",
    )
    .await;
    expect_mappings(store, &[&m1b, &m3], "deletes of odd names").await;

    // Make-before-break: the new copy's mapping and the old one's delete in one group.
    let m3_new = Mapping {
        instance_id: "i-1-gen1".into(),
        generation: 1,
        ..m3.clone()
    };
    commit(
        store,
        vec![Group::new(vec![put(&m3_new), delete(&m3)])],
        "a replacement",
    )
    .await;
    expect_mappings(store, &[&m1b, &m3_new], "a replacement").await;

    // Ops apply in order, within a group and across the groups of a batch.
    let flip = mapping("dc4", "flip", "fp1");
    commit(
        store,
        vec![Group::new(vec![put(&flip), delete(&flip)])],
        "put then delete",
    )
    .await;
    expect_mappings(store, &[&m1b, &m3_new], "put then delete in one group").await;
    commit(
        store,
        vec![Group::new(vec![delete(&flip), put(&flip)])],
        "delete then put",
    )
    .await;
    expect_mappings(
        store,
        &[&m1b, &m3_new, &flip],
        "delete then put in one group",
    )
    .await;
    let flip2 = Mapping {
        fingerprint: "fp2".into(),
        ..flip.clone()
    };
    commit(
        store,
        vec![put(&flip2).into(), delete(&flip).into(), put(&flip2).into()],
        "three groups on one key",
    )
    .await;
    expect_mappings(store, &[&m1b, &m3_new, &flip2], "three groups on one key").await;
    commit(store, vec![delete(&flip).into()], "cleanup").await;

    // Cursors: put, overwrite, delete, delete again.
    let c1 = Cursor {
        epoch: 7,
        seq: 42,
        complete: false,
        updated_ms: 1,
    };
    let c2 = Cursor {
        epoch: 7,
        seq: 43,
        complete: true,
        updated_ms: 2,
    };
    let cursor = |origin: &str, cursor: Cursor| Op::PutCursor {
        origin: origin.into(),
        cursor,
    };
    commit(
        store,
        vec![Group::new(vec![cursor("dc2", c1), cursor("dc/3", c1)])],
        "cursors",
    )
    .await;
    let stored = load(store, "cursors").await;
    assert_eq!(
        stored.cursors,
        BTreeMap::from([("dc/3".to_owned(), c1), ("dc2".to_owned(), c1)]),
        "{} store: cursors",
        store.kind()
    );
    commit(store, vec![cursor("dc2", c2).into()], "a cursor overwrite").await;
    let del_cursor = || Op::DeleteCursor {
        origin: "dc/3".into(),
    };
    commit(store, vec![del_cursor().into()], "a cursor delete").await;
    commit(store, vec![del_cursor().into()], "the same cursor delete").await;
    let stored = load(store, "cursor changes").await;
    assert_eq!(
        stored.cursors,
        BTreeMap::from([("dc2".to_owned(), c2)]),
        "{} store: cursors after overwrite and delete",
        store.kind()
    );

    // Meta: put, overwrite, delete, delete again.
    let meta = |key: &str, value: &str| Op::PutMeta {
        key: key.into(),
        value: value.into(),
    };
    commit(
        store,
        vec![Group::new(vec![
            meta("schema", "1"),
            meta("member/x", "{\"a\":1}"),
        ])],
        "meta",
    )
    .await;
    commit(store, vec![meta("schema", "2").into()], "a meta overwrite").await;
    let del_meta = || Op::DeleteMeta {
        key: "member/x".into(),
    };
    commit(store, vec![del_meta().into()], "a meta delete").await;
    commit(store, vec![del_meta().into()], "the same meta delete").await;
    let stored = load(store, "meta changes").await;
    assert_eq!(
        stored.meta,
        BTreeMap::from([("schema".to_owned(), "2".to_owned())]),
        "{} store: meta",
        store.kind()
    );

    // Invalid requests are rejected whole: nothing of the batch is written.
    let too_big: Vec<Op> = (0..=MAX_GROUP_OPS)
        .map(|i| put(&mapping("dc5", &format!("big-{i}"), "x")))
        .collect();
    expect_invalid(store, vec![Group::new(too_big)], "a group too large").await;
    let fine = mapping("dc5", "fine", "x");
    expect_invalid(
        store,
        vec![
            put(&fine).into(),
            Group::new(vec![
                put(&mapping("dc5", "half", "x")),
                put(&mapping("", "i", "x")),
            ]),
        ],
        "a batch with an empty origin",
    )
    .await;
    expect_invalid(
        store,
        vec![
            Op::PutMeta {
                key: String::new(),
                value: "v".into(),
            }
            .into(),
        ],
        "an empty meta key",
    )
    .await;
    expect_mappings(store, &[&m1b, &m3_new], "rejected batches").await;

    // A bulk batch: groups of mixed sizes, up to the limit, 10 000 mappings in one call.
    let bulk: Vec<Mapping> = (0..BULK_MAPPINGS)
        .map(|i| mapping(&format!("bulk{}", i % 3), &format!("b-{i:05}"), "bulk"))
        .collect();
    let group_sizes = [1, MAX_GROUP_OPS, 13, 50, 2];
    let mut batch = Vec::new();
    let mut rest = bulk.as_slice();
    for size in group_sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at((*size).min(rest.len()));
        batch.push(Group::new(head.iter().map(put).collect()));
        rest = tail;
    }
    commit(store, batch, "10 000 mappings").await;
    let stored = load(store, "10 000 mappings").await;
    assert_eq!(
        stored.mappings.len(),
        BULK_MAPPINGS + 2,
        "{} store: mapping count after the bulk batch",
        store.kind()
    );
    let by_key: BTreeMap<(&str, &str), &Mapping> = stored
        .mappings
        .iter()
        .map(|m| ((m.origin.as_str(), m.instance_id.as_str()), m))
        .collect();
    for m in bulk.iter().chain([&m1b, &m3_new]) {
        assert_eq!(
            by_key.get(&(m.origin.as_str(), m.instance_id.as_str())),
            Some(&m),
            "{} store: bulk mapping {}/{}",
            store.kind(),
            m.origin,
            m.instance_id
        );
    }
    let deletes: Vec<Group> = bulk
        .chunks(MAX_GROUP_OPS)
        .map(|chunk| Group::new(chunk.iter().map(delete).collect()))
        .collect();
    commit(store, deletes, "10 000 deletes").await;
    expect_mappings(store, &[&m1b, &m3_new], "10 000 deletes").await;

    // Everything else is still there.
    let stored = load(store, "the end").await;
    assert_eq!(stored.cursors.len(), 1, "{} store: cursors", store.kind());
    assert_eq!(stored.meta.len(), 1, "{} store: meta", store.kind());
}
