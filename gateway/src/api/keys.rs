//! API keys of a project: create, list, revoke, rotate.

use orrery_core::store::{ApiKey, KeyKind, NewKey};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{Name, rfc3339_ms};
use crate::auth::{KeyChange, SecretKey};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::app_state as state;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum KeyKindOut {
    /// `pk_`: can only send events; safe to embed in a web page.
    Public,
    /// `sk_`: reads and administers the project, runs code. Keep it on
    /// servers.
    Secret,
    /// `xk_`: may only run code on the execution service.
    Execute,
}

impl From<KeyKind> for KeyKindOut {
    fn from(k: KeyKind) -> Self {
        match k {
            KeyKind::Public => Self::Public,
            KeyKind::Secret => Self::Secret,
            KeyKind::Execute => Self::Execute,
        }
    }
}

/// A key as listed: never the key itself.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KeyOut {
    /// Key id.
    pub id: Uuid,
    /// Owning project.
    pub project_id: Uuid,
    /// Display name.
    pub name: String,
    // No doc comment: poem-openapi would wrap the enum in `allOf`, which
    // some client generators reject; `KeyKindOut` documents itself.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub kind: KeyKindOut,
    /// Administers every project (secret keys only).
    pub admin: bool,
    /// First characters of the key, to recognise it.
    pub prefix: String,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Stops working at (after a rotation with grace), RFC 3339.
    pub expires_at: Option<String>,
    /// Revoked at, RFC 3339.
    pub revoked_at: Option<String>,
    /// Whether the key works now.
    pub active: bool,
}

impl From<ApiKey> for KeyOut {
    fn from(k: ApiKey) -> Self {
        let active = k.is_active(orrery_core::event::now_ms());
        Self {
            id: k.id,
            project_id: k.project_id,
            name: k.name,
            kind: k.kind.into(),
            admin: k.admin,
            prefix: k.prefix,
            created_at: rfc3339_ms(k.created_at),
            expires_at: k.expires_at.map(rfc3339_ms),
            revoked_at: k.revoked_at.map(rfc3339_ms),
            active,
        }
    }
}

/// A new key: the only time the key itself is shown.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreatedKeyOut {
    /// The key. Store it now: only its hash is kept.
    pub key: String,
    /// The stored record.
    pub info: KeyOut,
}

impl From<NewKey> for CreatedKeyOut {
    fn from(k: NewKey) -> Self {
        Self {
            key: k.plaintext,
            info: k.record.into(),
        }
    }
}

/// Body of key creation.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KeyIn {
    // No doc comment on the names: the schema of `Name` documents it.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub name: Name,
    // No doc comment: poem-openapi would wrap the enum in `allOf`, which
    // some client generators reject; `KeyKindOut` documents itself.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub kind: KeyKindOut,
    /// Administer every project (secret keys; needs an admin key).
    #[oai(default)]
    pub admin: bool,
}

/// Body of rotation.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RotateIn {
    /// Seconds the old key keeps working (0 to 30 days; default 0).
    #[oai(default, validator(maximum(value = "2592000")))]
    pub grace_seconds: u64,
}

/// The key list.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KeyListOut {
    /// Keys, oldest first, revoked ones included.
    pub keys: Vec<KeyOut>,
}

/// Answer of create and rotate.
#[derive(ApiResponse)]
pub enum CreatedKey {
    /// Created; the key is shown only now.
    #[oai(status = 201)]
    Created(Json<CreatedKeyOut>),
}

/// Key administration.
pub struct KeysApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Keys")]
impl KeysApi {
    /// Create a key
    ///
    /// A secret key creates public, secret and execute keys for its
    /// project; only an admin key may create an admin key (403 otherwise).
    #[oai(
        path = "/projects/:project_id/keys",
        method = "post",
        operation_id = "create_key"
    )]
    async fn create(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        body: Json<KeyIn>,
    ) -> ApiResult<CreatedKey> {
        let body = body.0;
        auth.0
            .may_change_key(KeyChange::Create, project_id.0, body.admin)?;
        if body.admin && body.kind != KeyKindOut::Secret {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidKeyKind,
                "only secret keys can be admin keys",
            ));
        }
        let name = body.name.into_inner();
        let kind = match body.kind {
            KeyKindOut::Public => KeyKind::Public,
            KeyKindOut::Secret => KeyKind::Secret,
            KeyKindOut::Execute => KeyKind::Execute,
        };
        let state = state(req);
        let key = state
            .store
            .create_key(project_id.0, &name, kind, body.admin)
            .await?;
        state.keys.clear();
        Ok(CreatedKey::Created(Json(key.into())))
    }

    /// List keys
    #[oai(
        path = "/projects/:project_id/keys",
        method = "get",
        operation_id = "list_keys"
    )]
    async fn list(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
    ) -> ApiResult<Json<KeyListOut>> {
        auth.0.require_project(project_id.0)?;
        let state = state(req);
        state.store.get_project(project_id.0).await?;
        let keys = state.store.list_keys(project_id.0).await?;
        Ok(Json(KeyListOut {
            keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    /// Revoke a key
    ///
    /// The key stops working at once. Only an admin key may revoke an admin
    /// key (403 otherwise), and the instance's last admin key that keeps
    /// working cannot be revoked (409 `last_admin_key`).
    #[oai(
        path = "/projects/:project_id/keys/:key_id/revoke",
        method = "post",
        operation_id = "revoke_key"
    )]
    async fn revoke(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Key id.
        key_id: Path<Uuid>,
    ) -> ApiResult<Json<KeyOut>> {
        let state = state(req);
        let target = state.store.get_key(project_id.0, key_id.0).await?;
        auth.0
            .may_change_key(KeyChange::Revoke, project_id.0, target.admin)?;
        let key = state.store.revoke_key(project_id.0, key_id.0).await?;
        state.keys.clear();
        Ok(Json(key.into()))
    }

    /// Rotate a key
    ///
    /// Makes a new key with the same name and rights; the old one stops
    /// working at once, or after `grace_seconds`. Only an admin key may
    /// rotate an admin key (403 otherwise).
    #[oai(
        path = "/projects/:project_id/keys/:key_id/rotate",
        method = "post",
        operation_id = "rotate_key"
    )]
    async fn rotate(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Key id.
        key_id: Path<Uuid>,
        body: Json<RotateIn>,
    ) -> ApiResult<CreatedKey> {
        let state = state(req);
        let target = state.store.get_key(project_id.0, key_id.0).await?;
        auth.0
            .may_change_key(KeyChange::Rotate, project_id.0, target.admin)?;
        let key = state
            .store
            .rotate_key(project_id.0, key_id.0, body.0.grace_seconds)
            .await?;
        state.keys.clear();
        Ok(CreatedKey::Created(Json(key.into())))
    }
}
