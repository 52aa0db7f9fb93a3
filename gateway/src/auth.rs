//! Authentication on the HTTP side: project keys in `X-API-Key` (looked
//! up through `keys::KeyCache`), the rights of each kind of key, and the
//! rule of who may change which key.
//!
//! The security schemes are handler parameters, so a handler cannot forget
//! them: [`SecretKey`] guards reading and administration, [`IngestKey`]
//! documents the header of the ingestion endpoints (which also take the
//! key from the body or query string, for browsers). JWT user accounts can
//! be added as a `Bearer` scheme producing the same [`Principal`].

use orrery_core::store::{ApiKey, KeyKind};
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey as HeaderKey;
use uuid::Uuid;

use crate::error::ApiError;
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
    /// 403 when the key belongs to another project and is not an admin key.
    pub fn require_project(&self, project: Uuid) -> Result<(), ApiError> {
        if self.is_admin() || self.key.project_id == project {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this key does not give access to that project",
            ))
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
    if !allowed.contains(&key.kind) {
        return Err(ApiError::forbidden(refusal).into());
    }
    let principal = Principal { key };
    if let Some(project) = path_project(req.uri().path()) {
        principal.require_project(project)?;
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
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "check_secret"
)]
pub struct SecretKey(pub Principal);

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
