//! Login to Service Center's access control (SC 2.x RBAC): one token for every call.
//!
//! SC answers `POST /v4/token` with `{"name":…,"password":…}` by `{"token":…}`, a JWT whose
//! `exp` claim says when it expires (12 h by default), and wants it as `Authorization:
//! Bearer <token>` on every call. The token is renewed at four fifths of its life, before SC
//! would refuse it; a `401` (revoked, SC restarted with a new key) is answered by
//! [`Auth::renew`], once per stale token however many calls saw it.
//!
//! SC locks an account for 15 minutes after two refused logins in a row, so a refused login
//! is not tried again at once: calls fail fast with the refusal until a back-off has passed.
//! The password is sent in the login body only; it is never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::client::{Api, Fault, Request, ScClient};
use crate::backoff::Backoff;
use crate::config::Secret;
use crate::registry::{RegistryError, Tenant};

/// The life assumed for a token whose expiry cannot be read.
const UNKNOWN_LIFE: Duration = Duration::from_secs(600);
/// Pauses between logins after a refusal: SC's lock lasts 15 minutes.
const REFUSED_MIN: Duration = Duration::from_secs(30);
const REFUSED_MAX: Duration = Duration::from_secs(15 * 60);

/// A token, ready to go into the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Token(HeaderValue);

impl Token {
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

/// The login of one adapter.
pub(super) struct Auth {
    user: String,
    password: Secret,
    state: Mutex<State>,
}

struct State {
    token: Option<Token>,
    renew_at: Instant,
    /// The last refusal and when a login may be tried again.
    refused: Option<(Instant, String)>,
    backoff: Backoff,
}

#[derive(Serialize)]
struct LoginRequest<'a> {
    name: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct LoginReply {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<u64>,
}

impl Auth {
    pub fn new(user: String, password: Secret) -> Auth {
        Auth {
            user,
            password,
            state: Mutex::new(State {
                token: None,
                renew_at: Instant::now(),
                refused: None,
                backoff: Backoff::new(REFUSED_MIN, REFUSED_MAX),
            }),
        }
    }

    /// The account name, for errors.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The current token, logging in first when there is none or it is due for renewal.
    ///
    /// # Errors
    /// The login's failure.
    pub async fn token(&self, client: &ScClient, now: Instant) -> Result<Token, Fault> {
        let mut state = self.state.lock().await;
        if let Some(token) = &state.token
            && now < state.renew_at
        {
            return Ok(token.clone());
        }
        self.login(&mut state, client, now).await
    }

    /// A token other than `stale`, which SC refused: the one another call already fetched,
    /// or a new login.
    ///
    /// # Errors
    /// The login's failure.
    pub async fn renew(
        &self,
        client: &ScClient,
        stale: &Token,
        now: Instant,
    ) -> Result<Token, Fault> {
        let mut state = self.state.lock().await;
        if let Some(token) = &state.token
            && token != stale
        {
            return Ok(token.clone());
        }
        state.token = None;
        self.login(&mut state, client, now).await
    }

    async fn login(
        &self,
        state: &mut State,
        client: &ScClient,
        now: Instant,
    ) -> Result<Token, Fault> {
        if let Some((retry_at, reason)) = &state.refused
            && now < *retry_at
        {
            return Err(Fault::new(RegistryError::Unavailable(format!(
                "login of registry account {:?} refused ({reason}); next try in {:?}",
                self.user,
                retry_at.duration_since(now)
            ))));
        }
        let body = serde_json::to_vec(&LoginRequest {
            name: &self.user,
            password: self.password.expose(),
        })
        .map_err(|e| {
            Fault::new(RegistryError::Invalid(format!(
                "login: cannot encode the request: {e}"
            )))
        })?;
        let home = Tenant::default_tenant();
        let request = Request {
            op: "login",
            method: Method::POST,
            tenant: &home,
            api: Api::Login,
            path: &[],
            query: &[],
            body: Some(body),
        };
        let reply = match client.send_with(&request, None).await {
            Ok(reply) => reply,
            // Refused (4xx): the account, password or its state; not a passing failure.
            Err(fault) if fault.unauthorized || fault.code.is_some_and(|c| c < 500_000) => {
                let pause = state.backoff.pause();
                let reason = fault.error.to_string();
                warn!(user = %self.user, %reason, retry_in = ?pause, "registry login refused");
                state.refused = Some((now + pause, reason));
                return Err(Fault {
                    error: RegistryError::Unavailable(format!(
                        "login of registry account {:?} refused: {}",
                        self.user, fault.error
                    )),
                    ..fault
                });
            }
            Err(fault) => return Err(fault),
        };
        let token = serde_json::from_slice::<LoginReply>(&reply)
            .map(|r| r.token)
            .unwrap_or_default();
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .ok()
            .filter(|_| !token.is_empty())
            .ok_or_else(|| {
                Fault::new(RegistryError::Protocol(
                    "login: answer without a usable token".into(),
                ))
            })?;
        header.set_sensitive(true);
        let life = token_life(&token, SystemTime::now()).unwrap_or(UNKNOWN_LIFE);
        info!(user = %self.user, renew_in = ?life * 4 / 5, "logged in to the registry");
        let token = Token(header);
        state.token = Some(token.clone());
        state.renew_at = now + life * 4 / 5;
        state.refused = None;
        state.backoff.reset();
        Ok(token)
    }
}

/// How long a JWT has left, from its `exp` claim; `None` when it cannot be read.
fn token_life(token: &str, now: SystemTime) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let claims: Claims = serde_json::from_slice(&base64url(payload)?).ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(claims.exp?.saturating_sub(now)))
}

/// Decodes unpadded base64url (JWT segments).
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.trim_end_matches('=').bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_of_a_jwt() {
        // {"alg":"HS256"} . {"exp":1000,"account":"a"} . signature
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjEwMDAsImFjY291bnQiOiJhIn0.c2ln";
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(token_life(token, at(400)), Some(Duration::from_secs(600)));
        assert_eq!(token_life(token, at(2000)), Some(Duration::ZERO));
        assert_eq!(token_life("opaque", at(0)), None);
        assert_eq!(token_life("a.!!.b", at(0)), None);
    }
}
