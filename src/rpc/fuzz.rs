//! Property tests over what a hostile or broken peer can send (issue 20): pushes, pull
//! answers and snapshot chunks built from valid messages with one hostile field (empty, very
//! long, control characters, invalid UTF-8 on the wire), duplicate ids and sequences that
//! skip, repeat or go back. Each is converted to the model or refused with an error naming
//! a field; never a panic. A fixed number of cases in CI, more with `PROPTEST_CASES`
//! (docs/RELIABILITY.md, "Fuzzed inputs").

use std::time::Duration;

use proptest::prelude::*;
use prost::Message;

use super::convert::{self, ConvertError};
use super::proto::{
    self, Change, ChangeBatch, CompletionKind, PullChunk, PullComplete, PushRequest, SyncData,
    SyncInstance, SyncService, change, pull_chunk,
};
use super::transfer::read_answer;
use crate::sync::export::{Digest64, Revision};
use crate::sync::link::{LinkError, PullDeadlines, Pulled};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(crate::fuzz_cases(cases))
    }
}

/// A hostile text: empty, an id, any Unicode (control characters included), or very long.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,12}",
        any::<String>(),
        "[\\x00-\\x1f\\x7f]{1,4}",
        (1usize..70_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn service(id: &str) -> SyncService {
    SyncService {
        service_id: id.to_owned(),
        app: "mall".into(),
        name: format!("svc-{id}"),
        version: "1.0.0".into(),
        status: "UP".into(),
        domain_project: "acme/shop".into(),
        ..SyncService::default()
    }
}

fn instance(service_id: &str, id: &str) -> SyncInstance {
    SyncInstance {
        instance_id: id.to_owned(),
        service_id: service_id.to_owned(),
        endpoints: vec!["rest://10.0.0.1:8080".into()],
        host_name: format!("host-{id}"),
        status: "UP".into(),
        domain_project: "acme/shop".into(),
        ..SyncInstance::default()
    }
}

/// Puts `text` into field number `field` of a service (of those a peer fills in).
fn spoil_service(s: &mut SyncService, field: usize, text: String) {
    match field % 9 {
        0 => s.service_id = text,
        1 => s.app = text,
        2 => s.name = text,
        3 => s.version = text,
        4 => s.status = text,
        5 => s.domain_project = text,
        6 => s.description = text,
        7 => {
            s.properties.insert(text.clone(), text);
        }
        _ => {
            s.tags.insert(text, "v".into());
        }
    }
}

fn spoil_instance(i: &mut SyncInstance, field: usize, text: String) {
    match field % 8 {
        0 => i.instance_id = text,
        1 => i.service_id = text,
        2 => i.endpoints.push(text),
        3 => i.host_name = text,
        4 => i.status = text,
        5 => i.domain_project = text,
        6 => i.version = text,
        _ => {
            i.properties.insert(text, "v".into());
        }
    }
}

/// One change: an upsert, a service or a removal of ids from a small pool (so that ids
/// repeat), possibly with one hostile field, or a change without a kind.
fn change_at(seq: u64) -> impl Strategy<Value = Change> {
    (
        0u8..8,
        0u8..3,
        0u8..3,
        proptest::option::weighted(0.15, (any::<usize>(), hostile_text(), any::<bool>())),
    )
        .prop_map(move |(kind, s, i, spoil)| {
            let (sid, iid) = (format!("s{s}"), format!("i{i}"));
            let mut service = service(&sid);
            let mut inst = instance(&sid, &iid);
            if let Some((field, text, on_service)) = spoil {
                if on_service {
                    spoil_service(&mut service, field, text);
                } else {
                    spoil_instance(&mut inst, field, text);
                }
            }
            let kind = match kind {
                0 => None,
                1 | 2 => Some(change::Kind::Service(service)),
                3 | 4 => Some(change::Kind::Removed(proto::InstanceKey {
                    domain_project: inst.domain_project,
                    service_id: inst.service_id,
                    instance_id: inst.instance_id,
                })),
                _ => Some(change::Kind::Upsert(proto::Upsert {
                    service: Some(service),
                    instance: Some(inst),
                })),
            };
            Change {
                seq,
                observed_ms: 7,
                kind,
            }
        })
}

/// Sequences after `from`: consecutive, or with one skipped, repeated or going back.
fn seqs(from: u64, n: usize) -> impl Strategy<Value = Vec<u64>> {
    (0u8..12, any::<prop::sample::Index>()).prop_map(move |(how, at)| {
        let mut seqs: Vec<u64> = (1..=n as u64).map(|k| from.wrapping_add(k)).collect();
        if n > 0 {
            let at = at.index(n);
            match how {
                0 => seqs[at] = seqs[at].wrapping_add(1),
                1 => seqs[at] = seqs[at].wrapping_sub(1),
                2 => seqs[at] = 0,
                _ => {}
            }
        }
        seqs
    })
}

fn changes(from: u64, max: usize) -> impl Strategy<Value = Vec<Change>> {
    (0..=max)
        .prop_flat_map(move |n| seqs(from, n))
        .prop_flat_map(|seqs| seqs.into_iter().map(change_at).collect::<Vec<_>>())
}

fn push_request() -> impl Strategy<Value = PushRequest> {
    (
        prop_oneof![6 => Just("dc1".to_owned()), 1 => hostile_text()],
        prop_oneof![1 => Just(0u64), 3 => Just(1u64), 3 => any::<u64>()],
        prop_oneof![Just(0u64), 0u64..100, Just(u64::MAX - 2), any::<u64>()],
        proptest::bool::weighted(0.85),
        any::<u64>(),
    )
        .prop_flat_map(|(origin, epoch, from_seq, honest_to, to)| {
            changes(from_seq, 6).prop_map(move |changes| PushRequest {
                origin: origin.clone(),
                epoch,
                from_seq,
                to_seq: if honest_to {
                    changes.last().map_or(from_seq, |c| c.seq)
                } else {
                    to
                },
                changes,
            })
        })
}

/// What every refusal must be: a field path under `root` and a metric reason.
fn check_refusal(e: &ConvertError, root: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        e.field().starts_with(root),
        "refusal names {:?}, not a field of {}: {}",
        e.field(),
        root,
        e
    );
    prop_assert!(!e.reason().is_empty());
    prop_assert!(e.to_string().contains(e.field()), "{}", e);
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("test runtime: {e}"))
}

proptest! {
    #![proptest_config(config(512))]

    /// Any push converts to a model whose sequences are exactly `from_seq + 1 ..= to_seq`
    /// (and which comes back the same through the wire), or is refused naming a field.
    #[test]
    fn pushes_convert_exactly_or_are_refused(request in push_request()) {
        match convert::push_from_wire(request.clone()) {
            Ok(push) => {
                prop_assert_eq!(&push.origin, &request.origin);
                prop_assert!(push.epoch >= 1);
                prop_assert!(!push.changes.is_empty());
                for (k, (seq, _, _)) in push.changes.iter().enumerate() {
                    prop_assert_eq!(*seq, push.from_seq + 1 + k as u64);
                }
                prop_assert_eq!(push.to_seq, push.from_seq + push.changes.len() as u64);
                let again =
                    convert::push_to_wire(&push.origin, push.epoch, push.from_seq, &push.changes);
                prop_assert_eq!(convert::push_from_wire(again), Ok(push));
            }
            Err(e) => check_refusal(&e, "push")?,
        }
    }

    /// The same pushes after a trip through bytes mangled on the way (a bit flipped, a byte
    /// dropped or added, cut short): prost refuses them (invalid UTF-8 included) or they
    /// convert or are refused as above.
    #[test]
    fn mangled_push_bytes_never_panic(
        request in push_request(),
        edits in proptest::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = request.encode_to_vec();
        for (op, at, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match op {
                0 => bytes[at] ^= 1 << (byte % 8),
                1 => { bytes.remove(at); }
                2 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        if let Ok(decoded) = PushRequest::decode(&bytes[..]) {
            match convert::push_from_wire(decoded) {
                Ok(push) => prop_assert_eq!(push.to_seq, push.from_seq + push.changes.len() as u64),
                Err(e) => check_refusal(&e, "push")?,
            }
        }
    }

    /// A string that is not UTF-8 on the wire never reaches the conversion: the decoder
    /// refuses the message.
    #[test]
    fn invalid_utf8_is_refused_by_the_decoder(
        origin in "[a-z]{1,20}",
        at in any::<prop::sample::Index>(),
        bad in prop_oneof![Just(0xffu8), Just(0xc0u8), 0x80u8..0xc0],
    ) {
        let request = PushRequest { origin: origin.clone(), epoch: 1, ..PushRequest::default() };
        let mut bytes = request.encode_to_vec();
        // Tag and length (one byte each for a short origin), then the text.
        bytes[2 + at.index(origin.len())] = bad;
        prop_assert!(PushRequest::decode(&bytes[..]).is_err());
    }

    /// Snapshot chunks with services and instances from small id pools (so duplicates and
    /// instances without their service occur) and hostile fields: accepted chunks hold each
    /// instance once, with its own service; the rest is refused naming a field.
    #[test]
    fn snapshot_chunks_are_exact_or_refused(
        services in proptest::collection::vec((0u8..4, proptest::option::weighted(0.2, (any::<usize>(), hostile_text()))), 0..5),
        instances in proptest::collection::vec((0u8..4, 0u8..4, proptest::option::weighted(0.2, (any::<usize>(), hostile_text()))), 0..8),
    ) {
        let data = SyncData {
            services: services.into_iter().map(|(s, spoil)| {
                let mut w = service(&format!("s{s}"));
                if let Some((field, text)) = spoil { spoil_service(&mut w, field, text); }
                w
            }).collect(),
            instances: instances.into_iter().map(|(s, i, spoil)| {
                let mut w = instance(&format!("s{s}"), &format!("i{i}"));
                if let Some((field, text)) = spoil { spoil_instance(&mut w, field, text); }
                w
            }).collect(),
        };
        match convert::chunk_from_wire(data.clone()) {
            Ok(items) => {
                prop_assert_eq!(items.len(), data.instances.len());
                let mut seen = std::collections::HashSet::new();
                for (service, instance) in &items {
                    prop_assert_eq!(&service.service_id, &instance.service_id);
                    prop_assert_eq!(&service.tenant, &instance.tenant);
                    prop_assert!(seen.insert(instance.reference()), "duplicate accepted");
                }
            }
            Err(e) => check_refusal(&e, "chunk")?,
        }
    }
}

const SINCE: Revision = Revision { epoch: 10, seq: 20 };

/// An honest answer to a pull of `dc1` after [`SINCE`] (or a snapshot): up to date,
/// increments that continue it, or snapshot chunks with their marker's count and digest.
fn honest_answer(snapshot: bool) -> impl Strategy<Value = Vec<PullChunk>> {
    let marker = |epoch, seq, kind: CompletionKind, digest: Digest64| PullChunk {
        body: Some(pull_chunk::Body::Complete(PullComplete {
            origin: "dc1".into(),
            epoch,
            seq,
            completion: kind.into(),
            count: digest.count,
            digest: digest.sum,
            ..PullComplete::default()
        })),
    };
    if snapshot {
        proptest::collection::vec(
            proptest::collection::btree_set((0u8..3, 0u8..3), 0..4),
            0..3,
        )
        .prop_map(move |chunks| {
            let mut digest = Digest64::default();
            let mut out = Vec::new();
            let mut n = 0;
            for ids in chunks {
                let data = SyncData {
                    services: (0..3).map(|s| service(&format!("s{s}"))).collect(),
                    instances: ids
                        .into_iter()
                        .map(|(s, _)| {
                            n += 1;
                            instance(&format!("s{s}"), &format!("i{n}"))
                        })
                        .collect(),
                };
                for (service, instance) in convert::chunk_from_wire(data.clone())
                    .unwrap_or_else(|e| panic!("honest chunk refused: {e}"))
                {
                    digest.add(&service, &instance);
                }
                out.push(PullChunk {
                    body: Some(pull_chunk::Body::Snapshot(data)),
                });
            }
            out.push(marker(SINCE.epoch, 99, CompletionKind::Snapshot, digest));
            out
        })
        .boxed()
    } else {
        proptest::collection::vec(1usize..4, 0..3)
            .prop_flat_map(|sizes| {
                let mut from = SINCE.seq;
                let batches: Vec<_> = sizes
                    .into_iter()
                    .map(|n| {
                        let seqs: Vec<u64> = (1..=n as u64).map(|k| from + k).collect();
                        from += n as u64;
                        seqs.into_iter()
                            .map(|seq| {
                                change_at(seq)
                                    .prop_filter("a change with a kind", |c| c.kind.is_some())
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (batches, Just(from))
            })
            .prop_map(move |(batches, to)| {
                let mut out: Vec<PullChunk> = batches
                    .into_iter()
                    .map(|changes| PullChunk {
                        body: Some(pull_chunk::Body::Increments(ChangeBatch { changes })),
                    })
                    .collect();
                let kind = if to == SINCE.seq {
                    CompletionKind::UpToDate
                } else {
                    CompletionKind::Increments
                };
                out.push(marker(SINCE.epoch, to, kind, Digest64::default()));
                out
            })
            .boxed()
    }
}

/// One thing a broken or hostile origin does to an honest answer, by `how`: 0 to 5 change
/// the marker, 6 to 8 drop, repeat or add a chunk; anything else leaves the answer honest.
fn spoil_answer(chunks: &mut Vec<PullChunk>, how: u8, at: prop::sample::Index, value: u64) {
    let at = at.index(chunks.len());
    match how {
        6 => {
            chunks.remove(at);
            return;
        }
        7 => {
            let copy = chunks[at].clone();
            chunks.insert(at, copy);
            return;
        }
        8 => {
            chunks.insert(at, PullChunk { body: None });
            return;
        }
        _ => {}
    }
    let Some(PullChunk {
        body: Some(pull_chunk::Body::Complete(done)),
    }) = chunks.last_mut()
    else {
        return;
    };
    match how {
        0 => done.origin = "dc9".into(),
        1 => done.epoch = done.epoch.wrapping_add(value % 3).wrapping_sub(1),
        2 => done.seq = done.seq.wrapping_add(value % 3).wrapping_sub(1),
        3 => done.count = done.count.wrapping_add(1 + value % 2),
        4 => done.digest ^= value | 1,
        5 => done.completion = (value % 6) as i32,
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// The client's reading of a pull answer: whatever the chunks, the result is increments
    /// that continue the asked revision exactly up to the marker, a snapshot whose count and
    /// digest match the marker, or an error; never a panic.
    #[test]
    fn pull_answers_are_consistent_or_refused(
        (snapshot, mut chunks) in any::<bool>().prop_flat_map(|snapshot| (Just(snapshot), honest_answer(snapshot))),
        asked_snapshot in proptest::bool::weighted(0.1),
        how in 0u8..14,
        at in any::<prop::sample::Index>(),
        value in any::<u64>(),
    ) {
        spoil_answer(&mut chunks, how, at, value);
        let snapshot = snapshot != asked_snapshot;
        let since = (!snapshot).then_some(SINCE);
        let deadlines = PullDeadlines {
            first: Duration::from_secs(5),
            idle: Duration::from_secs(5),
            whole: Duration::from_secs(5),
        };
        let stream = futures::stream::iter(chunks.clone().into_iter().map(Ok));
        let answer = runtime().block_on(read_answer(
            stream,
            "dc1",
            since,
            deadlines,
            tokio::time::Instant::now() + deadlines.first,
        ));
        let marker = chunks.iter().find_map(|c| match &c.body {
            Some(pull_chunk::Body::Complete(done)) => Some(done.clone()),
            _ => None,
        });
        match answer {
            Ok(pulled) => {
                let marker = marker.ok_or_else(|| TestCaseError::fail("accepted without a marker"))?;
                prop_assert_eq!(marker.origin.as_str(), "dc1");
                let at = Revision { epoch: marker.epoch, seq: marker.seq };
                match pulled {
                    Pulled::UpToDate(revision) => {
                        prop_assert_eq!(revision, at);
                        prop_assert_eq!(Some(revision), since);
                    }
                    Pulled::Increments { to, changes } => {
                        let since = since.ok_or_else(|| TestCaseError::fail("increments to a snapshot request"))?;
                        prop_assert_eq!(to, at);
                        prop_assert_eq!(to.epoch, since.epoch);
                        for (k, (seq, _, _)) in changes.iter().enumerate() {
                            prop_assert_eq!(*seq, since.seq + 1 + k as u64);
                        }
                        prop_assert_eq!(to.seq, since.seq + changes.len() as u64);
                    }
                    Pulled::Snapshot { revision, items } => {
                        prop_assert_eq!(revision, at);
                        prop_assert_eq!(
                            CompletionKind::try_from(marker.completion),
                            Ok(CompletionKind::Snapshot)
                        );
                        let mut digest = Digest64::default();
                        for (service, instance) in &items {
                            digest.add(service, instance);
                        }
                        prop_assert_eq!(digest.count, marker.count);
                        prop_assert_eq!(digest.sum, marker.digest);
                    }
                }
            }
            Err(LinkError::Malformed(e)) => {
                let text = e.to_string();
                prop_assert!(text.starts_with("increments") || text.starts_with("chunk"), "{}", text);
            }
            Err(LinkError::Incomplete(why)) => prop_assert!(!why.is_empty()),
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }
}

/// A schema id from a small pool (so that ids repeat), or a hostile one.
fn schema_id() -> impl Strategy<Value = String> {
    prop_oneof![4 => (0u8..4).prop_map(|n| format!("schema-{n}")), 1 => hostile_text()]
}

proptest! {
    #![proptest_config(config(512))]

    /// A `Contracts` request: the tenant, service and ids it names, or refused naming a
    /// `contracts.…` field.
    #[test]
    fn contracts_requests_are_exact_or_refused(
        domain_project in prop_oneof![3 => Just("acme/shop".to_owned()), 1 => hostile_text()],
        service_id in prop_oneof![3 => Just("s1".to_owned()), 1 => hostile_text()],
        schema_ids in proptest::collection::vec(schema_id(), 0..6),
    ) {
        let request = proto::ContractsRequest {
            domain_project: domain_project.clone(),
            service_id: service_id.clone(),
            schema_ids: schema_ids.clone(),
        };
        match convert::contracts_request_from_wire(request) {
            Ok((tenant, id, ids)) => {
                prop_assert_eq!(tenant.to_string(), domain_project);
                prop_assert_eq!(id, service_id);
                prop_assert_eq!(ids, schema_ids);
            }
            Err(e) => check_refusal(&e, "contracts")?,
        }
    }

    /// A `Contracts` reply: only schemas that were asked for, each once (answered or left
    /// for later), or refused naming a `contracts_reply.…` field.
    #[test]
    fn contracts_replies_answer_only_what_was_asked(
        asked in proptest::collection::btree_set((0u8..4).prop_map(|n| format!("schema-{n}")), 0..4),
        answered in proptest::collection::vec((schema_id(), hostile_text()), 0..4),
        more in proptest::collection::vec(schema_id(), 0..3),
    ) {
        let asked: Vec<String> = asked.into_iter().collect();
        let reply = proto::ContractsReply {
            contracts: answered
                .into_iter()
                .map(|(schema_id, content)| proto::Contract {
                    schema_id,
                    summary: "sum".into(),
                    content,
                })
                .collect(),
            more: more.clone(),
        };
        match convert::contracts_from_wire(reply, &asked) {
            Ok((schemas, later)) => {
                let mut seen = std::collections::HashSet::new();
                for id in schemas.iter().map(|s| &s.id).chain(&later) {
                    prop_assert!(asked.contains(id), "{} was not asked for", id);
                    prop_assert!(seen.insert(id.clone()), "{} answered twice", id);
                }
                prop_assert_eq!(later, more);
            }
            Err(e) => check_refusal(&e, "contracts_reply")?,
        }
    }
}
