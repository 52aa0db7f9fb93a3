//! Authentication on the HTTP side: project keys in `X-API-Key` (looked
//! up through `keys::KeyCache`), the rights of each kind of key, and the
//! rule of who may change which key.
//!
//! The security schemes are handler parameters, so a handler cannot forget
//! them: [`SecretKey`] guards reading and administration, [`IngestKey`]
//! documents the header of the ingestion endpoints (which also take the
//! key from the body or query string, for browsers). [`SecretKey`] also
//! takes an account's access token (`crate::accounts`), as a bearer token
//! or the login cookie, and checks the user's role in the path's project.

use orrery_core::store::{Account, ApiKey, KeyKind, Role};
use poem::{Request, RequestBody};
use poem_openapi::auth::ApiKey as HeaderKey;
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme};
use uuid::Uuid;

use crate::accounts::User;
use crate::error::{ApiError, ErrorCode};
use crate::state::app_state as state;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key used.
    pub key: ApiKey,
}

impl Principal {
    /// The project the key belongs to.
    pub fn project_id(&self) -> Uuid {
        self.key.project_id
    }

    /// Whether the key administers every project.
    pub fn is_admin(&self) -> bool {
        self.key.kind == KeyKind::Secret && self.key.admin
    }

    /// Checks that the key may read and administer `project`.
    ///
    /// # Errors
    /// 404 `not_found` when the key belongs to another project and is not
    /// an admin key: to such a key the project does not exist, as to an
    /// account that is not a member (nobody learns which ids are projects).
    pub fn require_project(&self, project: Uuid) -> Result<(), ApiError> {
        if self.is_admin() || self.key.project_id == project {
            Ok(())
        } else {
            Err(ApiError::not_found("project"))
        }
    }

    /// Checks that the key administers the whole instance.
    ///
    /// # Errors
    /// 403 otherwise.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "only an admin secret key can do this (the one `orrery init` printed, or one made with admin: true)",
            ))
        }
    }
}

/// What a caller does to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Makes a new key.
    Create,
    /// Replaces a key by a new one with the same rights.
    Rotate,
    /// Stops a key now.
    Revoke,
}

impl KeyChange {
    fn verb(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Rotate => "rotate",
            Self::Revoke => "revoke",
        }
    }
}

impl Principal {
    /// The one rule for changing keys (README, "Who may change which
    /// key"): a secret key changes the non-admin keys of its own project;
    /// only an admin key creates, rotates or revokes an admin key, in any
    /// project. No change may give or keep more rights than the caller
    /// has. (That no change leaves the instance without a lasting admin
    /// key is checked by the store, inside the change's transaction: 409
    /// `last_admin_key`.)
    ///
    /// # Errors
    /// 403 `forbidden` naming what is refused.
    pub fn may_change_key(
        &self,
        change: KeyChange,
        project: Uuid,
        target_admin: bool,
    ) -> Result<(), ApiError> {
        self.require_project(project)?;
        if target_admin && !self.is_admin() {
            return Err(ApiError::forbidden(format!(
                "only an admin key may {} an admin key, and this key is not one",
                change.verb()
            )));
        }
        Ok(())
    }
}

/// Authenticates `key` and checks that its kind is one of `allowed`, and
/// that it may act on the project its route names.
///
/// The project check is here, in the security scheme, rather than in each
/// handler: every route with a `project_id` path parameter gets it before
/// its body is read, so a new endpoint cannot forget it (a test walks the
/// OpenAPI spec to prove it for each one).
async fn principal(
    req: &Request,
    key: HeaderKey,
    allowed: &[KeyKind],
    refusal: &'static str,
) -> poem::Result<Principal> {
    let state = state(req);
    let key = state.keys.authenticate(&state.store, &key.key).await?;
    let principal = Principal { key };
    // The project first: to a key of another project the route's project
    // does not exist, whatever the key's kind.
    if let Some(project) = path_project(req.uri().path()) {
        principal.require_project(project)?;
    }
    if !allowed.contains(&principal.key.kind) {
        return Err(ApiError::forbidden(refusal).into());
    }
    Ok(principal)
}

/// The project a path names: `/api/v1/projects/{project_id}[/...]`. (Read
/// from the path itself: poem-openapi names path parameters by position
/// internally.) A malformed id is left to the handler's parameter parsing,
/// which answers 400.
fn path_project(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix("/api/v1/projects/")?;
    let id = rest.split('/').next()?;
    Uuid::parse_str(id).ok()
}

async fn check_secret(req: &Request, key: HeaderKey) -> poem::Result<Principal> {
    principal(
        req,
        key,
        &[KeyKind::Secret],
        "reading and administration need a secret key (sk_): a public key (pk_) can only send events, an execute key (xk_) only run code",
    )
    .await
}

async fn check_execute(req: &Request, key: HeaderKey) -> poem::Result<Principal> {
    principal(
        req,
        key,
        &[KeyKind::Secret, KeyKind::Execute],
        "code execution needs a secret key (sk_) or an execute key (xk_)",
    )
    .await
}

/// A key allowed to run code: a secret key (`sk_...`) or an execute key
/// (`xk_...`), in the `X-API-Key` header.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "check_execute"
)]
pub struct ExecuteKey(pub Principal);

/// An execute or secret key in the `api_key` query parameter (WebSocket
/// from a browser).
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "api_key",
    key_in = "query",
    checker = "check_execute"
)]
pub struct ExecuteKeyQuery(pub Principal);

/// A secret key (`sk_...`) in the `X-API-Key` header: reads and
/// administers its project; an admin secret key administers all projects.
#[derive(SecurityScheme)]
#[oai(
    rename = "SecretKey",
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header"
)]
pub struct SecretKeyHeader(pub HeaderKey);

/// An account's access token (`POST /api/v1/auth/login`) as
/// `Authorization: Bearer`: what its role in the project allows.
#[derive(SecurityScheme)]
#[oai(rename = "AccessToken", ty = "bearer", bearer_format = "JWT")]
pub struct AccessToken(pub poem_openapi::auth::Bearer);

/// An account's access token in the `orrery_access` cookie (the
/// dashboard); writes also need the `X-CSRF-Token` header of the login.
#[derive(SecurityScheme)]
#[oai(
    rename = "AccessCookie",
    ty = "api_key",
    key_name = "orrery_access",
    key_in = "cookie"
)]
pub struct AccessCookie(pub HeaderKey);

/// A user calling with an access token, and their role in the project
/// the path names (if it names one).
#[derive(Debug, Clone)]
pub struct UserCaller {
    /// The user.
    pub user: User,
    /// `(project, role)` for the path's project.
    pub project_role: Option<(Uuid, Role)>,
}

/// Who reads or administers: a secret key, or a logged-in user.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A secret key.
    Key(Principal),
    /// A user with an access token.
    User(UserCaller),
}

impl Caller {
    /// Whether the caller administers the whole instance (an admin
    /// secret key, an administrator account).
    pub fn is_admin(&self) -> bool {
        match self {
            Self::Key(p) => p.is_admin(),
            Self::User(u) => u.user.account.admin,
        }
    }

    /// The account, when a user calls.
    pub fn account(&self) -> Option<&Account> {
        match self {
            Self::Key(_) => None,
            Self::User(u) => Some(&u.user.account),
        }
    }

    /// The user's role in `project` as checked for the path.
    fn role_in(&self, project: Uuid) -> Option<Role> {
        match self {
            Self::User(u) => u
                .project_role
                .filter(|(p, _)| *p == project)
                .map(|(_, r)| r),
            Self::Key(_) => None,
        }
    }

    /// Checks that the caller may act on `project` (the role the path
    /// needs was checked with the credentials).
    ///
    /// # Errors
    /// 404 for another project's key and for a user who is not a member.
    pub fn require_project(&self, project: Uuid) -> Result<(), ApiError> {
        match self {
            Self::Key(p) => p.require_project(project),
            Self::User(_) if self.is_admin() || self.role_in(project).is_some() => Ok(()),
            Self::User(_) => Err(ApiError::not_found("project")),
        }
    }

    /// Checks that the caller administers the instance.
    ///
    /// # Errors
    /// 403 otherwise.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Key(p) => p.require_admin(),
            Self::User(_) if self.is_admin() => Ok(()),
            Self::User(_) => Err(ApiError::forbidden(
                "only an administrator (or an admin secret key) can do this",
            )),
        }
    }

    /// The key rule of [`Principal::may_change_key`]; for users, a
    /// project's owner changes its non-admin keys, an administrator any.
    ///
    /// # Errors
    /// 403 `forbidden` naming what is refused; 404 for a non-member.
    pub fn may_change_key(
        &self,
        change: KeyChange,
        project: Uuid,
        target_admin: bool,
    ) -> Result<(), ApiError> {
        match self {
            Self::Key(p) => p.may_change_key(change, project, target_admin),
            Self::User(_) => {
                self.require_project(project)?;
                if target_admin && !self.is_admin() {
                    return Err(ApiError::forbidden(format!(
                        "only an administrator may {} an admin key",
                        change.verb()
                    )));
                }
                Ok(())
            }
        }
    }
}

/// What a user's role must be for `method` on the project sub-path `rest`
/// (after `/api/v1/projects/{id}`): viewers read the statistics, members
/// read everything, owners also change things.
fn needed_role(method: &poem::http::Method, rest: &str) -> Role {
    let rest = rest.trim_start_matches('/');
    let first = rest.split('/').next().unwrap_or_default();
    let reads = *method == poem::http::Method::GET || *method == poem::http::Method::HEAD;
    if reads && matches!(first, "" | "stats" | "users" | "live") {
        Role::Viewer
    } else if reads || (*method == poem::http::Method::POST && rest == "sql") {
        Role::Member
    } else {
        Role::Owner
    }
}

/// Authenticates a user's access token and checks the role the path
/// needs, and the CSRF token for a cookie-authenticated write.
async fn user_caller(req: &Request, token: &str, via_cookie: bool) -> poem::Result<Caller> {
    let state = state(req);
    let user = state.accounts.user(&state.store, token, via_cookie).await?;
    let safe = matches!(
        *req.method(),
        poem::http::Method::GET | poem::http::Method::HEAD | poem::http::Method::OPTIONS
    );
    if via_cookie && !safe {
        let given = req
            .headers()
            .get(crate::accounts::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !state.accounts.csrf_ok(user.session, given) {
            return Err(ApiError::new(
                ErrorCode::CsrfFailed,
                "a write authenticated by cookie needs the X-CSRF-Token header (the value of the orrery_csrf cookie)",
            )
            .into());
        }
    }
    let mut project_role = None;
    let path = req.uri().path();
    if let Some(project) = path_project(path) {
        let rest = path
            .strip_prefix("/api/v1/projects/")
            .and_then(|r| r.split_once('/'))
            .map_or("", |(_, r)| r);
        let role = state
            .accounts
            .role(&state.store, user.account.id, project)
            .await?;
        if !user.account.admin {
            let Some(role) = role else {
                return Err(ApiError::not_found("project").into());
            };
            let need = needed_role(req.method(), rest);
            if role < need {
                return Err(ApiError::forbidden(format!(
                    "your role in this project ({}) does not allow this; it needs {}",
                    role.name(),
                    need.name()
                ))
                .into());
            }
        }
        project_role = Some((project, role.unwrap_or(Role::Owner)));
    }
    Ok(Caller::User(UserCaller { user, project_role }))
}

/// Reading and administration: a secret key (`SecretKey`), or an
/// account's access token (`AccessToken`, `AccessCookie`). Checked in that
/// order: a request with `X-API-Key` is judged by its key alone.
pub struct SecretKey(pub Caller);

impl<'a> ApiExtractor<'a> for SecretKey {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        SecretKeyHeader::register(registry);
        AccessToken::register(registry);
        AccessCookie::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["SecretKey", "AccessToken", "AccessCookie"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if let Some(key) = req.headers().get("x-api-key") {
            let key = HeaderKey {
                key: key.to_str().unwrap_or_default().to_owned(),
            };
            return Ok(Self(Caller::Key(check_secret(req, key).await?)));
        }
        let bearer = req
            .headers()
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        if let Some(token) = bearer {
            return Ok(Self(user_caller(req, token.trim(), false).await?));
        }
        if let Some(token) = crate::accounts::cookie_value(req, crate::accounts::ACCESS_COOKIE) {
            return Ok(Self(user_caller(req, token, true).await?));
        }
        Err(ApiError::unauthorized(
            ErrorCode::Unauthorized,
            "no credentials: send a secret key in X-API-Key, or an access token as Authorization: Bearer (or the login cookie)",
        )
        .into())
    }
}

/// A single-use ticket (`POST /api/v1/auth/ws-ticket`) in the `ticket`
/// query parameter: a WebSocket from a browser, without a token in its
/// URL.
#[derive(SecurityScheme)]
#[oai(
    rename = "WsTicket",
    ty = "api_key",
    key_name = "ticket",
    key_in = "query"
)]
pub struct WsTicketQuery(pub HeaderKey);

/// The credentials of a live stream: a ticket for the path's project, or
/// what [`SecretKey`] takes.
pub enum LiveAuth {
    /// A ticket, used now; the account it was for.
    Ticket(Uuid),
    /// A key or a token.
    Caller(Caller),
}

impl LiveAuth {
    /// Checks that the credentials open `project`'s stream.
    ///
    /// # Errors
    /// As [`Caller::require_project`].
    pub fn require_project(&self, project: Uuid) -> Result<(), ApiError> {
        match self {
            // Checked against the path's project when it was taken.
            Self::Ticket(_) => Ok(()),
            Self::Caller(c) => c.require_project(project),
        }
    }
}

impl<'a> ApiExtractor<'a> for LiveAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        SecretKey::register(registry);
        WsTicketQuery::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut s = SecretKey::security_schemes();
        s.push("WsTicket");
        s
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let ticket = req
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
            .find(|(k, _)| k == "ticket")
            .map(|(_, v)| v.into_owned());
        let Some(ticket) = ticket else {
            return Ok(Self::Caller(
                SecretKey::from_request(req, body, param_opts).await?.0,
            ));
        };
        let state = state(req);
        let (account, project) = state.accounts.take_ticket(&state.store, &ticket).await?;
        let invalid = || {
            ApiError::unauthorized(
                ErrorCode::InvalidTicket,
                "the ticket is unknown, used or expired, or for another project; ask for a new one",
            )
        };
        if path_project(req.uri().path()) != Some(project) {
            return Err(invalid().into());
        }
        // The account may have lost its access since the ticket was made.
        let a = state.store.account(account).await.map_err(|_| invalid())?;
        let role = state.accounts.role(&state.store, account, project).await?;
        if !a.active || (!a.admin && role.is_none()) {
            return Err(invalid().into());
        }
        Ok(Self::Ticket(account))
    }
}

/// A project key (`pk_...` or `sk_...`) in the `X-API-Key` header. Browsers
/// may instead send it as `api_key` in the JSON body or the query string.
#[derive(SecurityScheme)]
#[oai(
    rename = "ProjectKey",
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header"
)]
pub struct IngestKeyHeader(pub HeaderKey);

/// The ingestion credential: the header, or else the body / query string.
#[derive(SecurityScheme)]
pub enum IngestKey {
    /// Given in the header.
    Header(IngestKeyHeader),
    /// Not in the header; looked for in the body or query string.
    #[oai(fallback)]
    Elsewhere,
}

impl IngestKey {
    /// The header key, if one was sent.
    pub fn header(&self) -> Option<&str> {
        match self {
            Self::Header(h) => Some(h.0.key.as_str()),
            Self::Elsewhere => None,
        }
    }
}

/// A project key as `Authorization: Bearer` (the Bilan server's clients).
#[derive(SecurityScheme)]
#[oai(rename = "ProjectKeyBearer", ty = "bearer")]
pub struct IngestKeyBearer(pub poem_openapi::auth::Bearer);

/// The credential of Bilan's endpoint: `Authorization: Bearer`, or the
/// `X-API-Key` header.
#[derive(SecurityScheme)]
pub enum BilanKey {
    /// As a bearer token.
    Bearer(IngestKeyBearer),
    /// In `X-API-Key`.
    Header(IngestKeyHeader),
    /// Neither: refused with `missing_key`.
    #[oai(fallback)]
    Missing,
}

impl BilanKey {
    /// The key sent, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Bearer(b) => Some(b.0.token.as_str()),
            Self::Header(h) => Some(h.0.key.as_str()),
            Self::Missing => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_of_a_path() {
        let id = Uuid::now_v7();
        for path in [
            format!("/api/v1/projects/{id}"),
            format!("/api/v1/projects/{id}/"),
            format!("/api/v1/projects/{id}/keys/{}/rotate", Uuid::now_v7()),
        ] {
            assert_eq!(path_project(&path), Some(id), "{path}");
        }
        for path in [
            "/api/v1/projects",
            "/api/v1/projects/",
            "/api/v1/projects/x/keys",
            "/api/v1/events",
        ] {
            assert_eq!(path_project(path), None, "{path}");
        }
    }
}
