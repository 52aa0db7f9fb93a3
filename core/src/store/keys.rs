//! API keys: generated here, shown once, stored as SHA-256 hashes.
//!
//! A key is `pk_` (public: can only ingest, safe to embed in a web page),
//! `sk_` (secret: reads and administers its project; an *admin* secret
//! key administers every project) or `xk_` (execute: may only run code on
//! the execution service), followed by 32 random URL-safe characters.

use base64::Engine;
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set, Statement, TransactionTrait,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::entities::api_key;
use super::{Store, StoreError};
use crate::event::now_ms;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `pk_`: ingestion only.
    Public,
    /// `sk_`: ingestion, reading and administration of its project, and
    /// code execution.
    Secret,
    /// `xk_`: code execution only.
    Execute,
}

impl KeyKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Secret => "secret",
            Self::Execute => "execute",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Public => "pk_",
            Self::Secret => "sk_",
            Self::Execute => "xk_",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "secret" => Self::Secret,
            "execute" => Self::Execute,
            _ => Self::Public,
        }
    }
}

/// A stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Key id.
    pub id: Uuid,
    /// Owning project.
    pub project_id: Uuid,
    /// Display name.
    pub name: String,
    /// Public or secret.
    pub kind: KeyKind,
    /// Instance-wide administration.
    pub admin: bool,
    /// The first characters, for display (`pk_Ab12Cd34`).
    pub prefix: String,
    /// Created, ms.
    pub created_at: i64,
    /// Stops working after this time (ms), set by rotation with a grace.
    pub expires_at: Option<i64>,
    /// Revoked at (ms).
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// Whether the key works at `now` (ms).
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| t > now)
    }
}

impl From<api_key::Model> for ApiKey {
    fn from(m: api_key::Model) -> Self {
        Self {
            id: m.id,
            project_id: m.project_id,
            name: m.name,
            kind: KeyKind::parse(&m.kind),
            admin: m.admin,
            prefix: m.prefix,
            created_at: m.created_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A freshly created key: the record and the key itself, shown once.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The stored record.
    pub record: ApiKey,
    /// The key; not kept anywhere.
    pub plaintext: String,
}

/// Hex SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn generate(kind: KeyKind) -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{}{}",
        kind.prefix(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn new_active(
    project_id: Uuid,
    name: &str,
    kind: KeyKind,
    admin: bool,
) -> (api_key::ActiveModel, String) {
    let plaintext = generate(kind);
    let model = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project_id),
        name: Set(name.to_owned()),
        kind: Set(kind.as_str().to_owned()),
        admin: Set(admin && kind == KeyKind::Secret),
        prefix: Set(plaintext.chars().take(11).collect()),
        hash: Set(hash_key(&plaintext)),
        created_at: Set(now_ms()),
        expires_at: Set(None),
        revoked_at: Set(None),
    };
    (model, plaintext)
}

impl Store {
    /// Creates a key for a project.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the project does not exist.
    pub async fn create_key(
        &self,
        project_id: Uuid,
        name: &str,
        kind: KeyKind,
        admin: bool,
    ) -> Result<NewKey, StoreError> {
        self.get_project(project_id).await?;
        let (active, plaintext) = new_active(project_id, name, kind, admin);
        let record = active.insert(self.db()).await?.into();
        Ok(NewKey { record, plaintext })
    }

    /// A project's keys, oldest first, revoked ones included.
    ///
    /// # Errors
    /// The database error.
    pub async fn list_keys(&self, project_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::ProjectId.eq(project_id))
            .order_by_asc(api_key::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The key whose hash is `hash`, active or not.
    ///
    /// # Errors
    /// The database error.
    pub async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::Hash.eq(hash))
            .one(self.db())
            .await?
            .map(Into::into))
    }

    /// One key of a project, active or not.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the project has no such key.
    pub async fn get_key(&self, project_id: Uuid, key_id: Uuid) -> Result<ApiKey, StoreError> {
        Ok(self.key_model(project_id, key_id).await?.into())
    }

    async fn key_model(
        &self,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<api_key::Model, StoreError> {
        api_key::Entity::find_by_id(key_id)
            .filter(api_key::Column::ProjectId.eq(project_id))
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("key"))
    }

    /// Revokes a key now. Revoking twice keeps the first time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the project has no such key;
    /// [`StoreError::LastAdminKey`] when it is the instance's last lasting
    /// admin key (nothing is changed then).
    pub async fn revoke_key(&self, project_id: Uuid, key_id: Uuid) -> Result<ApiKey, StoreError> {
        let txn = self.db().begin().await?;
        lock_admin_keys(&txn).await?;
        // Write first, read after: on SQLite the write serializes this
        // transaction with any other change of keys, so the count below
        // sees theirs (a read first would fail its write on a stale snapshot).
        let changed = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now_ms()))
            .filter(api_key::Column::Id.eq(key_id))
            .filter(api_key::Column::ProjectId.eq(project_id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected
            > 0;
        let model = api_key::Entity::find_by_id(key_id)
            .filter(api_key::Column::ProjectId.eq(project_id))
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        if changed && model.admin {
            ensure_admin_left(&txn).await?;
        }
        txn.commit().await?;
        Ok(model.into())
    }

    /// Replaces a key by a new one of the same name and rights. The old key
    /// keeps working for `grace_secs` seconds (0: it stops at once).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the project has no such key, or it is
    /// already revoked.
    pub async fn rotate_key(
        &self,
        project_id: Uuid,
        key_id: Uuid,
        grace_secs: u64,
    ) -> Result<NewKey, StoreError> {
        let old = self.key_model(project_id, key_id).await?;
        let old_key = ApiKey::from(old.clone());
        if !old_key.is_active(now_ms()) {
            return Err(StoreError::NotFound("active key"));
        }
        let txn = self.db().begin().await?;
        let (active, plaintext) = new_active(project_id, &old.name, old_key.kind, old.admin);
        let record = active.insert(&txn).await?.into();
        let now = now_ms();
        let mut retired: api_key::ActiveModel = old.into();
        if grace_secs == 0 {
            retired.revoked_at = Set(Some(now));
        } else {
            let grace_ms = i64::try_from(grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            retired.expires_at = Set(Some(now.saturating_add(grace_ms)));
        }
        retired.update(&txn).await?;
        txn.commit().await?;
        Ok(NewKey { record, plaintext })
    }
}

/// Serializes the changes that can remove admin keys, so that two of them
/// at once cannot both see the other's key as the one left. SQLite needs
/// nothing: its writers are serialized, and each such change writes before
/// it counts.
pub(super) async fn lock_admin_keys(txn: &DatabaseTransaction) -> Result<(), StoreError> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        // A constant key of our own: "orrery admin keys".
        txn.execute(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock(7262737001)",
        ))
        .await?;
    }
    Ok(())
}

/// Lasting admin keys (working and not expiring), of one project or all.
pub(super) async fn lasting_admin_keys(
    txn: &DatabaseTransaction,
    project: Option<Uuid>,
) -> Result<u64, StoreError> {
    let mut query = api_key::Entity::find()
        .filter(api_key::Column::Admin.eq(true))
        .filter(api_key::Column::Kind.eq(KeyKind::Secret.as_str()))
        .filter(api_key::Column::RevokedAt.is_null())
        .filter(api_key::Column::ExpiresAt.is_null());
    if let Some(project) = project {
        query = query.filter(api_key::Column::ProjectId.eq(project));
    }
    Ok(query.count(txn).await?)
}

/// Fails with [`StoreError::LastAdminKey`] when, inside `txn`, no admin
/// key is left that works and keeps working (not revoked, not expiring).
pub(super) async fn ensure_admin_left(txn: &DatabaseTransaction) -> Result<(), StoreError> {
    if lasting_admin_keys(txn, None).await? == 0 {
        return Err(StoreError::LastAdminKey);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_kind_prefix_and_entropy() {
        let a = generate(KeyKind::Public);
        let b = generate(KeyKind::Public);
        assert!(a.starts_with("pk_") && a.len() == 35, "{a}");
        assert_ne!(a, b);
        assert!(generate(KeyKind::Secret).starts_with("sk_"));
        assert!(generate(KeyKind::Execute).starts_with("xk_"));
        assert_eq!(hash_key("x").len(), 64);
    }
}
