//! SC 2.x's built-in RBAC, reduced to what a client of the registry API meets: one account,
//! `POST /v4/token` to log in, and the bearer-token check in front of every other call.
//!
//! Wire facts (SC v2.2.0 `server/resource/rbac/auth_resource.go`, `server/plugin/auth/buildin`,
//! go-chassis/cari v0.9.0 `rbac/error.go`):
//! - `POST /v4/token` with `{"name":…,"password":…[,"tokenExpirationTime":"30m"]}` answers
//!   `200 {"token":"…"}`; the lifetime defaults to 12 h and must lie in 15 m..24 h when given.
//!   A wrong name or password answers `401` / `401202`. The route exists only with RBAC on.
//! - Every other call but version and health needs `Authorization: Bearer {token}` (SC takes
//!   the second space-separated word): no header `401` / `401204`, not two words or an
//!   unknown token `401` / `401201`, an expired token `401` / `401205`.
//!
//! Tokens are JWT-shaped (`header.claims.signature`, claims `account`, `roles`, `exp` as SC
//! signs them) so a client may read `exp`; the signature is random and the registry knows its
//! tokens by heart instead of verifying it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::errors::ScError;
use super::http::{MAX_BODY_BYTES, Reply, json_ok, read_body};
use super::state::Registry;

/// The login route (no project segment).
pub const TOKEN_PATH: &str = "/v4/token";
/// `ErrUnauthorized`: a malformed header or a token the registry did not issue.
pub const UNAUTHORIZED: u32 = 401_201;
/// `ErrUserOrPwdWrong`: login with a wrong name or password.
pub const USER_OR_PWD_WRONG: u32 = 401_202;
/// `ErrNoAuthHeader`: no `Authorization` header.
pub const NO_AUTH_HEADER: u32 = 401_204;
/// `ErrTokenExpired`.
pub const TOKEN_EXPIRED: u32 = 401_205;
/// `TokenExpirationTimeChecker`: the shortest and longest lifetime a login may ask for.
const MIN_ASKED_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_ASKED_TTL: Duration = Duration::from_secs(24 * 3600);
/// Expired tokens are remembered this long (to answer `401205` rather than `401201`).
const EXPIRED_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The tokens issued so far and when each expires.
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: Mutex<BTreeMap<String, Instant>>,
}

/// The login body (`rbac.Account`, only the fields login reads).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Login {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token_expiration_time: String,
}

/// RFC 4648 base64url without padding, as JWT segments are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// `POST /v4/token`.
pub async fn login(reg: &Registry, body: Body) -> Reply {
    let Some(rbac) = &reg.config.rbac else {
        return Err(ScError::invalid("rbac is disabled"));
    };
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let req: Login = serde_json::from_slice(&bytes).map_err(|e| ScError::invalid(e.to_string()))?;
    let ttl = if req.token_expiration_time.is_empty() {
        rbac.token_ttl
    } else {
        humantime::parse_duration(&req.token_expiration_time)
            .ok()
            .filter(|d| (MIN_ASKED_TTL..=MAX_ASKED_TTL).contains(d))
            .ok_or_else(|| {
                ScError::invalid(format!(
                    "field 'Account.TokenExpirationTime' invalid value '{}' does not match rule: TokenExpirationTime",
                    req.token_expiration_time
                ))
            })?
    };
    if req.name.is_empty() {
        return Err(ScError::invalid(
            "field 'Account.Name' invalid value '' does not match rule: {Min: 1}",
        ));
    }
    if req.name != rbac.user || req.password != rbac.password {
        return Err(ScError::new(USER_OR_PWD_WRONG, ""));
    }
    let exp_unix = reg.clock.unix_secs().parse::<u64>().unwrap_or(0) + ttl.as_secs();
    let header = base64url(br#"{"alg":"RS512","typ":"JWT"}"#);
    let claims = json!({ "account": req.name, "roles": ["admin"], "exp": exp_unix });
    let claims = base64url(claims.to_string().as_bytes());
    let signature = base64url(&rand::random::<[u8; 32]>());
    let token = format!("{header}.{claims}.{signature}");
    let now = Instant::now();
    {
        let mut tokens = reg
            .tokens
            .by_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tokens.retain(|_, expiry| now.saturating_duration_since(*expiry) < EXPIRED_MEMORY);
        tokens.insert(token.clone(), now + ttl);
    }
    Ok(json_ok(&json!({ "token": token })))
}

/// The token check in front of every call that needs one.
///
/// # Errors
/// `401204` without header, `401201` for a malformed header or an unknown token, `401205`
/// for an expired one.
pub fn check(reg: &Registry, headers: &HeaderMap) -> Result<(), ScError> {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if value.is_empty() {
        return Err(ScError::new(NO_AUTH_HEADER, ""));
    }
    let words: Vec<&str> = value.split(' ').collect();
    let [_, token] = words.as_slice() else {
        return Err(ScError::new(UNAUTHORIZED, "invalid auth header"));
    };
    let expiry = reg
        .tokens
        .by_token
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(*token)
        .copied();
    match expiry {
        None => Err(ScError::new(UNAUTHORIZED, "crypto/rsa: verification error")),
        Some(at) if at <= Instant::now() => Err(ScError::new(TOKEN_EXPIRED, "")),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::base64url;

    #[test]
    fn base64url_matches_rfc_4648() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
