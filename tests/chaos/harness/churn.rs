//! The applications of every data centre, played by the harness: they register instances
//! (into services shared by all data centres, new services now and then), change their
//! status and properties, deregister, stop heartbeating so their lease expires, and register
//! again when their registry lost them. Every change goes into the ledger: the truth the
//! invariants are checked against.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Heartbeat period of every application instance; the lease is `HEARTBEAT × (TIMES + 1)`.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
const TIMES: u64 = 2;
/// The lease of an application instance.
pub const LEASE: Duration = Duration::from_secs(2 * (TIMES + 1));
/// After the last heartbeat, by when the registry has surely removed an instance (its lease
/// plus the registry's expiry check and cache).
pub const EXPIRY_SLACK: Duration = Duration::from_secs(3);
pub const APP: &str = "chaos";

#[derive(Debug, Clone, PartialEq)]
pub enum Life {
    /// Registered and heartbeating.
    Alive,
    /// Heartbeats stopped at the given time; the lease runs out.
    Expiring { last_beat: Instant },
    /// Deregistered (or expired) at this time.
    Gone { at: Instant },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub dc: usize,
    pub service: String,
    pub instance_id: String,
    pub status: String,
    pub properties: BTreeMap<String, String>,
    pub life: Life,
    /// When the applications last changed it (register, status, properties, removal).
    pub changed: Instant,
}

impl Entry {
    /// When the instance is surely gone from its registry, if it is going.
    pub fn gone_since(&self) -> Option<Instant> {
        match self.life {
            Life::Alive => None,
            Life::Expiring { last_beat } => Some(last_beat + LEASE + EXPIRY_SLACK),
            Life::Gone { at } => Some(at),
        }
    }
}

/// What the applications did: host name (unique, `h<dc>-<n>`) -> entry.
#[derive(Default)]
pub struct Ledger {
    pub entries: BTreeMap<String, Entry>,
    pub ops: BTreeMap<&'static str, u64>,
    pub errors: u64,
    /// Failed application calls by kind (the call and the registry's answer).
    pub error_kinds: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    /// When the last heartbeat round ended: no live instance's lease renewal is later.
    pub last_beat: Option<Instant>,
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

pub fn lock(ledger: &SharedLedger) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The true origin data centre of a host name `h<dc>-<n>`.
pub fn origin_of_host(host: &str) -> Option<usize> {
    host.strip_prefix('h')?.split('-').next()?.parse().ok()
}

pub struct Apps {
    client: reqwest::Client,
    /// Registry base URL per data centre (index dc - 1).
    registries: Vec<String>,
    pub ledger: SharedLedger,
    rng: StdRng,
    next: u64,
    services: usize,
    /// Service ids per data centre and service name.
    service_ids: Arc<Mutex<HashMap<(usize, String), String>>>,
}

impl Apps {
    pub fn new(registries: Vec<String>, seed: u64, services: usize) -> Apps {
        Apps {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .pool_max_idle_per_host(8)
                .build()
                .unwrap_or_default(),
            registries,
            ledger: Arc::default(),
            rng: StdRng::seed_from_u64(seed ^ 0xa995),
            next: 0,
            services,
            service_ids: Arc::default(),
        }
    }

    fn ids(&self) -> MutexGuard<'_, HashMap<(usize, String), String>> {
        self.service_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn url(&self, dc: usize, path: &str) -> String {
        format!("{}/v4/default/registry{path}", self.registries[dc - 1])
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), String> {
        let mut request = self.client.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((status, text))
    }

    async fn service_id(&mut self, dc: usize, service: &str) -> Result<String, String> {
        if let Some(id) = self.ids().get(&(dc, service.to_owned())) {
            return Ok(id.clone());
        }
        let body = json!({"service": {"appId": APP, "serviceName": service, "version": "1.0.0"}});
        let (status, text) = self
            .call(
                reqwest::Method::POST,
                &self.url(dc, "/microservices"),
                Some(body),
            )
            .await?;
        if status != 200 {
            return Err(format!(
                "create service {service} in dc{dc}: {status} {text}"
            ));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("create service: {e}"))?;
        let id = v["serviceId"].as_str().unwrap_or_default().to_owned();
        self.ids().insert((dc, service.to_owned()), id.clone());
        Ok(id)
    }

    async fn put_instance(&mut self, dc: usize, host: &str, entry: &Entry) -> Result<(), String> {
        let service_id = self.service_id(dc, &entry.service).await?;
        let body = json!({"instance": {
            "instanceId": entry.instance_id,
            "hostName": host,
            "endpoints": [format!("rest://{host}.chaos:8080")],
            "status": entry.status,
            "properties": entry.properties,
            "healthCheck": {"mode": "push", "interval": HEARTBEAT.as_secs(), "times": TIMES},
        }});
        let url = self.url(dc, &format!("/microservices/{service_id}/instances"));
        let (status, text) = self.call(reqwest::Method::POST, &url, Some(body)).await?;
        if status == 400 && text.contains("400012") {
            // The service is gone (a wiped registry): create it again.
            self.ids().remove(&(dc, entry.service.clone()));
        }
        if status != 200 {
            return Err(format!("register {host} in dc{dc}: {status} {text}"));
        }
        Ok(())
    }

    /// Registers `count` new instances in `dc` before the syncers start (an initial sync of
    /// thousands).
    pub async fn preload(&mut self, dc: usize, count: usize) -> Result<(), String> {
        for _ in 0..count {
            self.register_new(dc, false).await?;
        }
        Ok(())
    }

    async fn register_new(&mut self, dc: usize, new_service: bool) -> Result<(), String> {
        if new_service {
            self.services += 1;
        }
        let service = if new_service {
            format!("svc-{}", self.services - 1)
        } else {
            format!("svc-{}", self.rng.random_range(0..self.services))
        };
        self.next += 1;
        let host = format!("h{dc}-{}", self.next);
        let entry = Entry {
            dc,
            service,
            instance_id: format!("i{dc}x{}", self.next),
            status: "UP".into(),
            properties: BTreeMap::from([("zone".into(), format!("z{}", self.next % 3))]),
            life: Life::Alive,
            changed: Instant::now(),
        };
        self.put_instance(dc, &host, &entry).await?;
        let mut ledger = lock(&self.ledger);
        *ledger
            .ops
            .entry(if new_service {
                "new service"
            } else {
                "register"
            })
            .or_default() += 1;
        ledger.entries.insert(
            host,
            Entry {
                changed: Instant::now(),
                ..entry
            },
        );
        Ok(())
    }

    /// One random change by the applications of a random data centre.
    pub async fn step(&mut self) {
        let dcs = self.registries.len();
        let dc = self.rng.random_range(1..=dcs);
        let roll = self.rng.random_range(0..100);
        let result = if roll < 30 {
            self.register_new(dc, false).await
        } else if roll < 33 {
            self.register_new(dc, true).await
        } else {
            let alive: Vec<String> = lock(&self.ledger)
                .entries
                .iter()
                .filter(|(_, e)| e.dc == dc && e.life == Life::Alive)
                .map(|(h, _)| h.clone())
                .collect();
            if alive.len() < 5 {
                self.register_new(dc, false).await
            } else {
                let host = alive[self.rng.random_range(0..alive.len())].clone();
                if roll < 55 {
                    self.flip_status(dc, &host).await
                } else if roll < 70 {
                    self.change_properties(dc, &host).await
                } else if roll < 88 {
                    self.deregister(dc, &host).await
                } else {
                    self.stop_heartbeats(&host);
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            let mut ledger = lock(&self.ledger);
            ledger.errors += 1;
            if std::env::var_os("CHAOS_VERBOSE").is_some() {
                eprintln!("application call failed: {e}");
            }
            *ledger.error_kinds.entry(error_kind(&e)).or_default() += 1;
            ledger.last_error = Some(e);
        }
    }

    fn entry(&self, host: &str) -> Option<Entry> {
        lock(&self.ledger).entries.get(host).cloned()
    }

    fn record(&self, host: &str, op: &'static str, change: impl FnOnce(&mut Entry)) {
        let mut ledger = lock(&self.ledger);
        *ledger.ops.entry(op).or_default() += 1;
        if let Some(entry) = ledger.entries.get_mut(host) {
            change(entry);
            entry.changed = Instant::now();
        }
    }

    async fn flip_status(&mut self, dc: usize, host: &str) -> Result<(), String> {
        let Some(entry) = self.entry(host) else {
            return Ok(());
        };
        let status = if entry.status == "UP" { "DOWN" } else { "UP" };
        let service_id = self.service_id(dc, &entry.service).await?;
        let url = self.url(
            dc,
            &format!(
                "/microservices/{service_id}/instances/{}/status?value={status}",
                entry.instance_id
            ),
        );
        // The ledger first: a change is in flight from the moment it is sent.
        self.record(host, "status", |e| e.status = status.to_owned());
        let (code, text) = self.call(reqwest::Method::PUT, &url, None).await?;
        if code != 200 {
            return Err(format!("status of {host} in dc{dc}: {code} {text}"));
        }
        Ok(())
    }

    async fn change_properties(&mut self, dc: usize, host: &str) -> Result<(), String> {
        let Some(entry) = self.entry(host) else {
            return Ok(());
        };
        let mut properties = entry.properties.clone();
        properties.insert(
            "version".into(),
            format!("v{}", self.rng.random_range(0..1000)),
        );
        let service_id = self.service_id(dc, &entry.service).await?;
        let url = self.url(
            dc,
            &format!(
                "/microservices/{service_id}/instances/{}/properties",
                entry.instance_id
            ),
        );
        let body = json!({ "properties": properties });
        self.record(host, "properties", |e| e.properties = properties.clone());
        let (code, text) = self.call(reqwest::Method::PUT, &url, Some(body)).await?;
        if code != 200 {
            return Err(format!("properties of {host} in dc{dc}: {code} {text}"));
        }
        Ok(())
    }

    async fn deregister(&mut self, dc: usize, host: &str) -> Result<(), String> {
        let Some(entry) = self.entry(host) else {
            return Ok(());
        };
        let service_id = self.service_id(dc, &entry.service).await?;
        let url = self.url(
            dc,
            &format!(
                "/microservices/{service_id}/instances/{}",
                entry.instance_id
            ),
        );
        self.record(host, "deregister", |e| {
            e.life = Life::Gone { at: Instant::now() }
        });
        let (code, text) = self.call(reqwest::Method::DELETE, &url, None).await?;
        if code != 200 && code != 400 {
            return Err(format!("deregister {host} in dc{dc}: {code} {text}"));
        }
        Ok(())
    }

    fn stop_heartbeats(&mut self, host: &str) {
        let last = lock(&self.ledger).last_beat;
        self.record(host, "lease expiry", |e| {
            e.life = Life::Expiring {
                last_beat: last.unwrap_or_else(Instant::now),
            }
        });
    }

    /// Heartbeats of every live instance of every data centre (one batch per registry every
    /// half heartbeat period), on a task of their own so nothing the harness waits for delays
    /// them. Instances whose lease surely ran out become gone in the ledger.
    pub fn heartbeats(&self) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let registries = self.registries.clone();
        let ledger = self.ledger.clone();
        let service_ids = self.service_ids.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT / 2);
            loop {
                tick.tick().await;
                for (index, base) in registries.iter().enumerate() {
                    let dc = index + 1;
                    let pairs: Vec<Value> = {
                        let ids = service_ids.lock().unwrap_or_else(PoisonError::into_inner);
                        lock(&ledger)
                            .entries
                            .values()
                            .filter(|e| e.dc == dc && e.life == Life::Alive)
                            .filter_map(|e| {
                                let id = ids.get(&(dc, e.service.clone()))?;
                                Some(json!({"serviceId": id, "instanceId": e.instance_id}))
                            })
                            .collect()
                    };
                    if pairs.is_empty() {
                        continue;
                    }
                    let url = format!("{base}/v4/default/registry/heartbeats");
                    let _ = client
                        .put(&url)
                        .json(&json!({ "instances": pairs }))
                        .send()
                        .await;
                }
                let mut ledger = lock(&ledger);
                let now = Instant::now();
                ledger.last_beat = Some(now);
                for entry in ledger.entries.values_mut() {
                    if let Some(at) = entry.gone_since()
                        && matches!(entry.life, Life::Expiring { .. })
                        && at <= now
                    {
                        entry.life = Life::Gone { at };
                    }
                }
            }
        })
    }

    /// The applications of `dc` register again after their registry lost everything.
    pub async fn register_again(&mut self, dc: usize) -> Result<usize, String> {
        self.ids().retain(|(d, _), _| *d != dc);
        let alive: Vec<(String, Entry)> = lock(&self.ledger)
            .entries
            .iter()
            .filter(|(_, e)| e.dc == dc && e.life == Life::Alive)
            .map(|(h, e)| (h.clone(), e.clone()))
            .collect();
        for (host, entry) in &alive {
            self.put_instance(dc, host, entry).await?;
        }
        // Instances whose lease was running out are simply gone with the data.
        let mut ledger = lock(&self.ledger);
        let now = Instant::now();
        for entry in ledger.entries.values_mut() {
            if entry.dc == dc && matches!(entry.life, Life::Expiring { .. }) {
                entry.life = Life::Gone { at: now };
            }
        }
        Ok(alive.len())
    }
}

/// "status 400 400017": the call and the registry's answer, without host or instance names.
fn error_kind(e: &str) -> String {
    let call = e.split_whitespace().next().unwrap_or_default();
    let answer = e.split(": ").nth(1).unwrap_or(e);
    let status = answer.split_whitespace().next().unwrap_or_default();
    let code = answer
        .split("errorCode\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or_default();
    format!("{call} {status} {code}").trim().to_owned()
}
