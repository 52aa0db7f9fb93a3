//! Accounts on the HTTP side: password hashing (argon2id), access tokens
//! (JWT, HS256), refresh tokens, the revocation check every request makes
//! (through a short cache that fails closed), roles, CSRF tokens, cookies
//! and the login lockout.
//!
//! Access tokens say who and which login (`sub`, `sid`); they carry no
//! rights. Whether the login still stands, whether the account is active
//! and an administrator, and its role in a project are read from the
//! database, and trusted for `auth.revocation_check_ms`: so a logout,
//! deactivation or role change on any instance holds everywhere within
//! that time, and a database that does not answer refuses requests (503)
//! rather than letting a revoked token through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use orrery_core::config::Config;
use orrery_core::event::now_ms;
use orrery_core::store::{Account, AuthSession, Role, Store};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// Passwords hashed at once; more wait (19 MiB each).
const HASHING_AT_ONCE: usize = 4;
/// Shortest password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password, characters (hashing cost is bounded anyway; this
/// bounds the body).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Issuer of the access tokens.
const ISSUER: &str = "orrery";
/// The cookie holding the access token.
pub const ACCESS_COOKIE: &str = "orrery_access";
/// The cookie holding the refresh token (sent to `/api/v1/auth` only).
pub const REFRESH_COOKIE: &str = "orrery_refresh";
/// The cookie the dashboard's script reads the CSRF token from.
pub const CSRF_COOKIE: &str = "orrery_csrf";
/// The header a cookie-authenticated write must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of refresh tokens.
const REFRESH_PREFIX: &str = "ort_";
/// Prefix of WebSocket tickets.
const TICKET_PREFIX: &str = "owt_";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The account.
    pub sub: Uuid,
    /// The login (token family).
    pub sid: Uuid,
    /// Issued at, s.
    pub iat: i64,
    /// Expires at, s.
    pub exp: i64,
    /// `orrery`.
    pub iss: String,
    /// `access`.
    pub typ: String,
    /// This token's own id.
    pub jti: Uuid,
}

/// A fresh pair of tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The JWT.
    pub access: String,
    /// Its lifetime, s.
    pub access_secs: u64,
    /// The refresh token.
    pub refresh: String,
    /// Its lifetime, s.
    pub refresh_secs: u64,
    /// The login.
    pub session: Uuid,
}

/// A user calling with a valid access token.
#[derive(Debug, Clone)]
pub struct User {
    /// The account as last read.
    pub account: Account,
    /// The login.
    pub session: Uuid,
    /// Whether the token came in the cookie.
    pub via_cookie: bool,
}

/// What the database said of (account, project).
type RoleCache = HashMap<(Uuid, Uuid), Cached<Option<Role>>>;

#[derive(Debug, Clone)]
struct Cached<T> {
    at: Instant,
    value: T,
}

/// The accounts service, one per instance.
pub struct Accounts {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    csrf_key: Vec<u8>,
    argon: Argon2<'static>,
    /// A hash of a random password: checked when the e-mail is unknown, so
    /// that both answers take the same time.
    dummy_hash: String,
    hashing: Semaphore,
    check_for: Duration,
    logins: Mutex<HashMap<Uuid, Cached<Option<AuthSession>>>>,
    roles: Mutex<RoleCache>,
    config: orrery_core::config::AuthConfig,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

fn new_salt() -> Result<SaltString, argon2::password_hash::Error> {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    SaltString::encode_b64(&bytes)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        ErrorCode::AuthUnavailable,
        "the database does not answer, so the token cannot be checked; retry later",
        1,
    )
}

/// Normalises an e-mail (trimmed, lower case) and checks its shape.
///
/// # Errors
/// A 400 naming `email`.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let e = email.trim().to_lowercase();
    let ok = e.chars().count() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "`email` must be an e-mail address (at most 254 characters)",
        ));
    }
    Ok(e)
}

/// Checks a new password's length.
///
/// # Errors
/// A 400 naming `field`.
pub fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("`{field}` must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

impl Accounts {
    /// The service for `config` (its secrets filled in).
    pub fn new(config: &Config) -> Self {
        let key = match &config.secrets.jwt_key {
            Some(k) => k.expose().as_bytes().to_vec(),
            None => hmac(&config.secrets.instance_key(), b"orrery access tokens v1"),
        };
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Our own instances issue and check the tokens: no leeway.
        validation.leeway = 0;
        // argon2's defaults are OWASP's: 19 MiB, 2 passes, 1 lane.
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
        // Hashing a random password cannot fail; if it did, unknown e-mails
        // would only be answered faster.
        let dummy_hash = new_salt()
            .and_then(|salt| {
                argon
                    .hash_password(random_token("").as_bytes(), &salt)
                    .map(|h| h.to_string())
            })
            .unwrap_or_default();
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
            csrf_key: hmac(&key, b"csrf"),
            argon,
            dummy_hash,
            hashing: Semaphore::new(HASHING_AT_ONCE),
            check_for: Duration::from_millis(config.auth.revocation_check_ms),
            logins: Mutex::new(HashMap::new()),
            roles: Mutex::new(HashMap::new()),
            config: config.auth.clone(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &orrery_core::config::AuthConfig {
        &self.config
    }

    /// Hashes `password` with argon2id (on a blocking thread).
    ///
    /// # Errors
    /// 500 when hashing fails.
    pub async fn hash_password(self: &Arc<Self>, password: &str) -> Result<String, ApiError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let me = Arc::clone(self);
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            new_salt().and_then(|salt| {
                me.argon
                    .hash_password(password.as_bytes(), &salt)
                    .map(|h| h.to_string())
            })
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))
    }

    /// Whether `password` matches `hash` (the dummy hash when `None`, so an
    /// unknown e-mail costs the same time and always fails). The
    /// comparison inside argon2 is constant-time.
    ///
    /// # Errors
    /// 500 when the blocking task fails.
    pub async fn verify_password(
        self: &Arc<Self>,
        hash: Option<&str>,
        password: &str,
    ) -> Result<bool, ApiError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let me = Arc::clone(self);
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.clone(), str::to_owned);
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|h| me.argon.verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
        Ok(ok && known)
    }

    /// The access token of login `session` of `account`.
    ///
    /// # Errors
    /// 500 when signing fails.
    pub fn access_token(&self, account: Uuid, session: Uuid) -> Result<String, ApiError> {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: account,
            sid: session,
            iat: now,
            exp: now + i64::try_from(self.config.access_token_secs).unwrap_or(900),
            iss: ISSUER.to_owned(),
            typ: "access".to_owned(),
            jti: Uuid::new_v4(),
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(&e))
    }

    /// Checks an access token's signature, algorithm, issuer, expiry and
    /// kind (not yet whether its login stands: [`Accounts::user`]).
    ///
    /// # Errors
    /// 401 `invalid_token` naming what is wrong.
    pub fn verify_access(&self, token: &str) -> Result<Claims, ApiError> {
        if token.len() > 4096 {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "the access token is too long",
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "the access token has expired; refresh it",
                    ErrorKind::InvalidSignature => "the access token's signature is wrong",
                    ErrorKind::InvalidAlgorithm => "the access token must be signed with HS256",
                    _ => "the access token is malformed",
                };
                ApiError::unauthorized(ErrorCode::InvalidToken, why)
            })?;
        if data.claims.typ != "access" {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "not an access token",
            ));
        }
        Ok(data.claims)
    }

    /// The login `sid` as the database last said (within
    /// `auth.revocation_check_ms`).
    async fn login(&self, store: &Store, sid: Uuid) -> Result<Option<AuthSession>, ApiError> {
        if let Ok(cache) = self.logins.lock()
            && let Some(c) = cache.get(&sid)
            && c.at.elapsed() < self.check_for
        {
            return Ok(c.value.clone());
        }
        let value = store.auth_session(sid).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot check a login");
            unavailable()
        })?;
        if let Ok(mut cache) = self.logins.lock() {
            if cache.len() > 100_000 {
                cache.retain(|_, c| c.at.elapsed() < self.check_for);
            }
            cache.insert(
                sid,
                Cached {
                    at: Instant::now(),
                    value: value.clone(),
                },
            );
        }
        Ok(value)
    }

    /// Forgets what this instance knows of login `sid` (after revoking
    /// it here, so that this instance refuses it at once).
    pub fn forget_login(&self, sid: Uuid) {
        if let Ok(mut cache) = self.logins.lock() {
            cache.remove(&sid);
        }
    }

    /// Forgets every cached login and role (after changing an account).
    pub fn forget_all(&self) {
        if let Ok(mut cache) = self.logins.lock() {
            cache.clear();
        }
        if let Ok(mut cache) = self.roles.lock() {
            cache.clear();
        }
    }

    /// The user an access token stands for: valid, its login not revoked
    /// or expired, its account active.
    ///
    /// # Errors
    /// 401 `invalid_token` or `token_revoked`; 503 `auth_unavailable`
    /// when the database cannot say.
    pub async fn user(
        &self,
        store: &Store,
        token: &str,
        via_cookie: bool,
    ) -> Result<User, ApiError> {
        let claims = self.verify_access(token)?;
        let login = self.login(store, claims.sid).await?;
        let Some(login) = login.filter(|l| l.account.id == claims.sub) else {
            return Err(ApiError::unauthorized(
                ErrorCode::TokenRevoked,
                "this token's login no longer exists",
            ));
        };
        if login.revoked_at.is_some() || !login.account.active || login.expires_at <= now_ms() {
            return Err(ApiError::unauthorized(
                ErrorCode::TokenRevoked,
                "this token's login has ended (logout, deactivation or a reused refresh token); log in again",
            ));
        }
        Ok(User {
            account: login.account,
            session: claims.sid,
            via_cookie,
        })
    }

    /// `account`'s role in `project` (cached like logins).
    ///
    /// # Errors
    /// 503 `auth_unavailable` when the database cannot say.
    pub async fn role(
        &self,
        store: &Store,
        account: Uuid,
        project: Uuid,
    ) -> Result<Option<Role>, ApiError> {
        if let Ok(cache) = self.roles.lock()
            && let Some(c) = cache.get(&(account, project))
            && c.at.elapsed() < self.check_for
        {
            return Ok(c.value);
        }
        let value = store.role_of(project, account).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read a role");
            unavailable()
        })?;
        if let Ok(mut cache) = self.roles.lock() {
            if cache.len() > 100_000 {
                cache.retain(|_, c| c.at.elapsed() < self.check_for);
            }
            cache.insert(
                (account, project),
                Cached {
                    at: Instant::now(),
                    value,
                },
            );
        }
        Ok(value)
    }

    /// Starts a login of `account`: a new token family.
    ///
    /// # Errors
    /// The database error; 500 when signing fails.
    pub async fn start_login(&self, store: &Store, account: Uuid) -> Result<Tokens, ApiError> {
        let refresh = random_token(REFRESH_PREFIX);
        let refresh_secs = self.config.refresh_token_secs;
        let expires = now_ms() + i64::try_from(refresh_secs * 1000).unwrap_or(i64::MAX / 2);
        let session = store
            .create_auth_session(account, &sha256_hex(&refresh), expires)
            .await?;
        Ok(Tokens {
            access: self.access_token(account, session)?,
            access_secs: self.config.access_token_secs,
            refresh,
            refresh_secs,
            session,
        })
    }

    /// Rotates a refresh token: the old one is spent, a new pair issued.
    ///
    /// # Errors
    /// 401 `invalid_token`, or `refresh_token_reused` (the login is then
    /// revoked); the database error.
    pub async fn refresh(&self, store: &Store, token: &str) -> Result<(Tokens, Account), ApiError> {
        use orrery_core::store::Rotation;
        if !token.starts_with(REFRESH_PREFIX) || token.len() > 256 {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "not a refresh token",
            ));
        }
        let next = random_token(REFRESH_PREFIX);
        let refresh_secs = self.config.refresh_token_secs;
        let expires = now_ms() + i64::try_from(refresh_secs * 1000).unwrap_or(i64::MAX / 2);
        match store
            .rotate_refresh(&sha256_hex(token), &sha256_hex(&next), expires)
            .await?
        {
            Rotation::Rotated(login) => Ok((
                Tokens {
                    access: self.access_token(login.account.id, login.id)?,
                    access_secs: self.config.access_token_secs,
                    refresh: next,
                    refresh_secs,
                    session: login.id,
                },
                login.account,
            )),
            Rotation::Reused => {
                self.forget_all();
                Err(ApiError::unauthorized(
                    ErrorCode::RefreshTokenReused,
                    "this refresh token was used before: its login is now revoked; log in again",
                ))
            }
            Rotation::Invalid => Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "the refresh token is unknown, expired, or its login has ended",
            )),
        }
    }

    /// The CSRF token of login `session`: the dashboard sends it back in
    /// `X-CSRF-Token` on every write authenticated by cookie.
    pub fn csrf_token(&self, session: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(hmac(&self.csrf_key, session.as_bytes()))
    }

    /// Whether `given` is the CSRF token of `session` (constant time).
    pub fn csrf_ok(&self, session: Uuid, given: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(given) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.csrf_key);
        ring::hmac::verify(&key, session.as_bytes(), &tag).is_ok()
    }

    /// A new single-use WebSocket ticket for `account` on `project`.
    ///
    /// # Errors
    /// The database error.
    pub async fn new_ticket(
        &self,
        store: &Store,
        account: Uuid,
        project: Uuid,
    ) -> Result<String, ApiError> {
        let ticket = random_token(TICKET_PREFIX);
        store
            .create_ws_ticket(
                &sha256_hex(&ticket),
                account,
                project,
                now_ms()
                    + i64::try_from(self.config.ticket_secs.saturating_mul(1000)).unwrap_or(30_000),
            )
            .await?;
        Ok(ticket)
    }

    /// Uses a ticket: the account and project it was for.
    ///
    /// # Errors
    /// 401 `invalid_ticket`; the database error.
    pub async fn take_ticket(&self, store: &Store, ticket: &str) -> Result<(Uuid, Uuid), ApiError> {
        let invalid = || {
            ApiError::unauthorized(
                ErrorCode::InvalidTicket,
                "the ticket is unknown, used or expired; ask for a new one",
            )
        };
        if !ticket.starts_with(TICKET_PREFIX) || ticket.len() > 256 {
            return Err(invalid());
        }
        store
            .take_ws_ticket(&sha256_hex(ticket))
            .await?
            .ok_or_else(invalid)
    }

    /// Refuses a login attempt while `email` or `ip` is locked.
    ///
    /// # Errors
    /// 429 `login_locked` with `Retry-After`; the database error.
    pub async fn check_lock(
        &self,
        store: &Store,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let now = now_ms();
        if let Some(until) = store.login_locked_until(&subjects(email, ip), now).await? {
            return Err(locked(until, now));
        }
        Ok(())
    }

    /// Counts a failed login against `email` and `ip`.
    ///
    /// # Errors
    /// The database error.
    pub async fn failed_login(
        &self,
        store: &Store,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let now = now_ms();
        let window =
            i64::try_from(self.config.lockout_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        for s in subjects(email, ip) {
            store
                .record_login_failure(&s, now, window, i64::from(self.config.lockout_attempts))
                .await?;
        }
        Ok(())
    }

    /// Forgets the failed logins of `email` after a success (those of the
    /// address stay: one good account must not clear guesses at others).
    ///
    /// # Errors
    /// The database error.
    pub async fn good_login(&self, store: &Store, email: &str) -> Result<(), ApiError> {
        store
            .clear_login_failures(&format!("email:{email}"))
            .await?;
        Ok(())
    }

    /// The `Set-Cookie` values of a login: the access token (HTTP-only,
    /// every path), the refresh token (HTTP-only, `/api/v1/auth` only) and
    /// the CSRF token (readable by the page's script).
    pub fn login_cookies(&self, tokens: &Tokens) -> Vec<String> {
        vec![
            self.cookie(ACCESS_COOKIE, &tokens.access, "/", tokens.access_secs, true),
            self.cookie(
                REFRESH_COOKIE,
                &tokens.refresh,
                "/api/v1/auth",
                tokens.refresh_secs,
                true,
            ),
            self.cookie(
                CSRF_COOKIE,
                &self.csrf_token(tokens.session),
                "/",
                tokens.refresh_secs,
                false,
            ),
        ]
    }

    /// The `Set-Cookie` values that remove the login cookies.
    pub fn clear_cookies(&self) -> Vec<String> {
        vec![
            self.cookie(ACCESS_COOKIE, "", "/", 0, true),
            self.cookie(REFRESH_COOKIE, "", "/api/v1/auth", 0, true),
            self.cookie(CSRF_COOKIE, "", "/", 0, false),
        ]
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: u64, http_only: bool) -> String {
        let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age}; SameSite=Lax");
        if http_only {
            c.push_str("; HttpOnly");
        }
        if self.config.secure_cookies {
            c.push_str("; Secure");
        }
        c
    }
}

fn subjects(email: &str, ip: Option<IpAddr>) -> Vec<String> {
    let mut s = vec![format!("email:{email}")];
    if let Some(ip) = ip {
        s.push(format!("ip:{ip}"));
    }
    s
}

fn locked(until: i64, now: i64) -> ApiError {
    let secs = u64::try_from((until - now + 999) / 1000)
        .unwrap_or(1)
        .max(1);
    let mut e = ApiError::new(
        ErrorCode::LoginLocked,
        format!("too many failed logins; try again in {secs} s"),
    );
    e.retry_after = Some(secs);
    e
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(req: &'a poem::Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(poem::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Accounts {
        let mut config = Config::default();
        config.secrets.ip_hash_key = Some(orrery_core::config::Secret::new("k".repeat(64)));
        Accounts::new(&config)
    }

    #[test]
    fn tokens_round_trip_and_forgeries_are_refused() {
        let a = service();
        let (account, session) = (Uuid::now_v7(), Uuid::now_v7());
        let token = a.access_token(account, session).unwrap_or_default();
        let claims = a.verify_access(&token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((claims.sub, claims.sid), (account, session));

        // Another key.
        let mut other = Config::default();
        other.secrets.ip_hash_key = Some(orrery_core::config::Secret::new("x".repeat(64)));
        let forged = Accounts::new(&other)
            .access_token(account, session)
            .unwrap_or_default();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = token.split('.').nth(1).unwrap_or_default();
        let expired = jsonwebtoken::encode(
            &Header::default(),
            &Claims {
                sub: account,
                sid: session,
                iat: 0,
                exp: 1000,
                iss: ISSUER.into(),
                typ: "access".into(),
                jti: Uuid::new_v4(),
            },
            &a.encoding,
        )
        .unwrap_or_default();
        let mut tampered = token.clone();
        tampered.insert(token.len() / 2 + 3, 'A');
        for bad in [
            forged,
            format!("{header}.{body}."),
            expired,
            tampered,
            String::new(),
            "a.b.c".into(),
            "x".repeat(10_000),
        ] {
            let err = a.verify_access(&bad).map(|_| ()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidToken, "{bad:.40}");
        }
    }

    #[test]
    fn csrf_tokens_belong_to_their_login() {
        let a = service();
        let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(a.csrf_ok(s1, &a.csrf_token(s1)));
        assert!(!a.csrf_ok(s2, &a.csrf_token(s1)));
        assert!(!a.csrf_ok(s1, ""));
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").unwrap_or_default(),
            "ada@example.com"
        );
        for bad in ["", "ada", "@x", "a@", "a b@x", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
