//! Accounts: people who log in, their roles in projects, their logins
//! (families of refresh tokens), single-use WebSocket tickets and failed
//! login counts. The gateway hashes passwords and tokens; this module only
//! stores what it is given (hashes, never secrets).

use sea_orm::{ConnectionTrait, DatabaseBackend, QueryResult, Statement, TransactionTrait};
use uuid::Uuid;

use super::{Store, StoreError, sql_for};
use crate::event::now_ms;

/// An account (without its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub id: Uuid,
    /// E-mail, lower case.
    pub email: String,
    /// Administers the instance.
    pub admin: bool,
    /// May log in; a deactivated account's logins are revoked.
    pub active: bool,
    /// Created, ms.
    pub created_at: i64,
    /// Last changed, ms.
    pub updated_at: i64,
    /// Last successful login, ms.
    pub last_login_at: Option<i64>,
}

/// A role in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads the statistics only (overview, time series, breakdowns,
    /// funnels, retention, users, live).
    Viewer,
    /// Reads everything in the project.
    Member,
    /// Reads and administers the project (keys, pipeline, members...).
    Owner,
}

impl Role {
    /// The stored and API name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Owner => "owner",
        }
    }

    /// Parses `owner`, `member` or `viewer`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "member" => Some(Self::Member),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// What an access token's login stands on, read on each request (through
/// the gateway's cache): the login and the account behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSession {
    /// The login's id (the token family).
    pub id: Uuid,
    /// Its account.
    pub account: Account,
    /// Refresh tokens of this login stop at this time, ms.
    pub expires_at: i64,
    /// Revoked (logout, reuse, deactivation, password change), ms.
    pub revoked_at: Option<i64>,
}

/// The fate of a refresh token presented for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was current: it is now spent; the login goes on.
    Rotated(AuthSession),
    /// It had been spent already: the whole login is now revoked.
    Reused,
    /// Unknown, expired, or its login revoked.
    Invalid,
}

const ACCOUNT_COLUMNS: &str = "a.id, a.email, a.admin, a.active, a.created_at, a.updated_at, \
                               a.last_login_at";

fn account(r: &QueryResult) -> Result<Account, StoreError> {
    Ok(Account {
        id: r.try_get_by_index(0)?,
        email: r.try_get_by_index(1)?,
        admin: r.try_get_by_index(2)?,
        active: r.try_get_by_index(3)?,
        created_at: r.try_get_by_index(4)?,
        updated_at: r.try_get_by_index(5)?,
        last_login_at: r.try_get_by_index(6)?,
    })
}

fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("unique") || s.contains("duplicate key")
}

impl Store {
    /// How many accounts exist.
    ///
    /// # Errors
    /// The database error.
    pub async fn count_accounts(&self) -> Result<i64, StoreError> {
        Ok(self
            .scalar::<i64>("SELECT COUNT(*) FROM accounts", vec![])
            .await?
            .unwrap_or(0))
    }

    /// Creates an account. With `only_if_none`, only when no account exists
    /// yet (the first administrator), atomically.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the e-mail is taken, or when
    /// `only_if_none` and an account exists; the database error.
    pub async fn create_account(
        &self,
        email: &str,
        password_hash: &str,
        admin: bool,
        only_if_none: bool,
    ) -> Result<Account, StoreError> {
        let now = now_ms();
        let id = Uuid::now_v7();
        let txn = self.db().begin().await?;
        let backend = txn.get_database_backend();
        if only_if_none && backend == DatabaseBackend::Postgres {
            // Two first registrations at once: one waits for the other.
            txn.execute(Statement::from_string(
                backend,
                "LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE",
            ))
            .await?;
        }
        let guard = if only_if_none {
            " WHERE NOT EXISTS (SELECT 1 FROM accounts)"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO accounts (id, email, password_hash, admin, active, created_at, \
             updated_at, last_login_at) SELECT ?, ?, ?, ?, ?, ?, ?, NULL{guard}"
        );
        let inserted = txn
            .execute(Statement::from_sql_and_values(
                backend,
                sql_for(backend, &sql),
                vec![
                    id.into(),
                    email.into(),
                    password_hash.into(),
                    admin.into(),
                    true.into(),
                    now.into(),
                    now.into(),
                ],
            ))
            .await;
        match inserted {
            Ok(r) if r.rows_affected() == 1 => {}
            Ok(_) => {
                return Err(StoreError::Conflict(
                    "an account exists already: registration is now by an administrator".into(),
                ));
            }
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "an account with the e-mail {email} exists"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        txn.commit().await?;
        Ok(Account {
            id,
            email: email.to_owned(),
            admin,
            active: true,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        })
    }

    /// The account with `email` and its password hash.
    ///
    /// # Errors
    /// The database error.
    pub async fn account_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(Account, String)>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a WHERE a.email = ?"
                ),
                vec![email.into()],
            )
            .await?;
        rows.first()
            .map(|r| Ok((account(r)?, r.try_get_by_index(7)?)))
            .transpose()
    }

    /// The account `id` and its password hash.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; the database error.
    pub async fn account_with_hash(&self, id: Uuid) -> Result<(Account, String), StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a WHERE a.id = ?"
                ),
                vec![id.into()],
            )
            .await?;
        let r = rows.first().ok_or(StoreError::NotFound("account"))?;
        Ok((account(r)?, r.try_get_by_index(7)?))
    }

    /// The account `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; the database error.
    pub async fn account(&self, id: Uuid) -> Result<Account, StoreError> {
        Ok(self.account_with_hash(id).await?.0)
    }

    /// Every account, oldest first.
    ///
    /// # Errors
    /// The database error.
    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a ORDER BY a.created_at, a.id"),
                vec![],
            )
            .await?;
        rows.iter().map(account).collect()
    }

    /// Changes what is given of `id`'s e-mail, admin flag and active flag.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] for a taken
    /// e-mail; the database error.
    pub async fn update_account(
        &self,
        id: Uuid,
        email: Option<&str>,
        admin: Option<bool>,
        active: Option<bool>,
    ) -> Result<Account, StoreError> {
        let changed = self
            .exec(
                "UPDATE accounts SET email = COALESCE(?, email), admin = COALESCE(?, admin), \
                 active = COALESCE(?, active), updated_at = ? WHERE id = ?",
                vec![
                    email.map(str::to_owned).into(),
                    admin.into(),
                    active.into(),
                    now_ms().into(),
                    id.into(),
                ],
            )
            .await;
        match changed {
            Ok(0) => Err(StoreError::NotFound("account")),
            Ok(_) => self.account(id).await,
            Err(StoreError::Db(e)) if is_unique_violation(&e) => Err(StoreError::Conflict(
                format!("an account with the e-mail {} exists", email.unwrap_or("")),
            )),
            Err(e) => Err(e),
        }
    }

    /// Replaces `id`'s password hash.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; the database error.
    pub async fn set_password_hash(&self, id: Uuid, hash: &str) -> Result<(), StoreError> {
        let n = self
            .exec(
                "UPDATE accounts SET password_hash = ?, updated_at = ? WHERE id = ?",
                vec![hash.into(), now_ms().into(), id.into()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound("account"));
        }
        Ok(())
    }

    /// Records a successful login.
    ///
    /// # Errors
    /// The database error.
    pub async fn touch_login(&self, id: Uuid) -> Result<(), StoreError> {
        self.exec(
            "UPDATE accounts SET last_login_at = ? WHERE id = ?",
            vec![now_ms().into(), id.into()],
        )
        .await?;
        Ok(())
    }

    /// Deletes `id` with its memberships, logins and tickets.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; the database error.
    pub async fn delete_account(&self, id: Uuid) -> Result<(), StoreError> {
        // Children first: SQLite enforces the foreign keys, but spelling it
        // out keeps both databases alike.
        for table in ["ws_tickets", "project_members"] {
            self.exec(
                &format!("DELETE FROM {table} WHERE account_id = ?"),
                vec![id.into()],
            )
            .await?;
        }
        self.exec(
            "DELETE FROM refresh_tokens WHERE session_id IN \
             (SELECT id FROM auth_sessions WHERE account_id = ?)",
            vec![id.into()],
        )
        .await?;
        self.exec(
            "DELETE FROM auth_sessions WHERE account_id = ?",
            vec![id.into()],
        )
        .await?;
        if self
            .exec("DELETE FROM accounts WHERE id = ?", vec![id.into()])
            .await?
            == 0
        {
            return Err(StoreError::NotFound("account"));
        }
        Ok(())
    }

    /// Active administrator accounts.
    ///
    /// # Errors
    /// The database error.
    pub async fn count_active_admins(&self) -> Result<i64, StoreError> {
        Ok(self
            .scalar::<i64>(
                "SELECT COUNT(*) FROM accounts WHERE admin = ? AND active = ?",
                vec![true.into(), true.into()],
            )
            .await?
            .unwrap_or(0))
    }

    // ---- logins ----

    /// Starts a login of `account` whose refresh tokens end at
    /// `expires_at`, with its first refresh token (by hash).
    ///
    /// # Errors
    /// The database error.
    pub async fn create_auth_session(
        &self,
        account: Uuid,
        refresh_hash: &str,
        expires_at: i64,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        self.exec(
            "INSERT INTO auth_sessions (id, account_id, created_at, expires_at, revoked_at, \
             revoked_reason) VALUES (?, ?, ?, ?, NULL, NULL)",
            vec![
                id.into(),
                account.into(),
                now_ms().into(),
                expires_at.into(),
            ],
        )
        .await?;
        self.exec(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at, used_at) \
             VALUES (?, ?, ?, NULL)",
            vec![refresh_hash.into(), id.into(), expires_at.into()],
        )
        .await?;
        Ok(id)
    }

    /// The login `id` with its account, if it exists.
    ///
    /// # Errors
    /// The database error.
    pub async fn auth_session(&self, id: Uuid) -> Result<Option<AuthSession>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS}, s.expires_at, s.revoked_at FROM auth_sessions s \
                     JOIN accounts a ON a.id = s.account_id WHERE s.id = ?"
                ),
                vec![id.into()],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(AuthSession {
                    id,
                    account: account(r)?,
                    expires_at: r.try_get_by_index(7)?,
                    revoked_at: r.try_get_by_index(8)?,
                })
            })
            .transpose()
    }

    /// Spends the refresh token `hash` and records its successor
    /// `next_hash` (valid until `expires_at`, which the login takes too).
    /// A token spent before revokes its login (theft: someone else holds
    /// a copy).
    ///
    /// # Errors
    /// The database error.
    pub async fn rotate_refresh(
        &self,
        hash: &str,
        next_hash: &str,
        expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        let now = now_ms();
        let rows = self
            .rows(
                "SELECT session_id, expires_at, used_at FROM refresh_tokens WHERE token_hash = ?",
                vec![hash.into()],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(Rotation::Invalid);
        };
        let session: Uuid = r.try_get_by_index(0)?;
        let token_expires: i64 = r.try_get_by_index(1)?;
        let used: Option<i64> = r.try_get_by_index(2)?;
        if used.is_some() {
            self.revoke_auth_session(session, "refresh token reused")
                .await?;
            return Ok(Rotation::Reused);
        }
        if token_expires <= now {
            return Ok(Rotation::Invalid);
        }
        // Spend it; losing this race to a concurrent use is a reuse.
        let spent = self
            .exec(
                "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                vec![now.into(), hash.into()],
            )
            .await?;
        if spent == 0 {
            self.revoke_auth_session(session, "refresh token reused")
                .await?;
            return Ok(Rotation::Reused);
        }
        let Some(login) = self.auth_session(session).await? else {
            return Ok(Rotation::Invalid);
        };
        if login.revoked_at.is_some() || !login.account.active {
            return Ok(Rotation::Invalid);
        }
        self.exec(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at, used_at) \
             VALUES (?, ?, ?, NULL)",
            vec![next_hash.into(), session.into(), expires_at.into()],
        )
        .await?;
        self.exec(
            "UPDATE auth_sessions SET expires_at = ? WHERE id = ?",
            vec![expires_at.into(), session.into()],
        )
        .await?;
        Ok(Rotation::Rotated(AuthSession {
            expires_at,
            ..login
        }))
    }

    /// Revokes the login `id` (idempotent: the first reason stays).
    ///
    /// # Errors
    /// The database error.
    pub async fn revoke_auth_session(&self, id: Uuid, reason: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ? \
             WHERE id = ? AND revoked_at IS NULL",
            vec![now_ms().into(), reason.into(), id.into()],
        )
        .await?;
        Ok(())
    }

    /// Revokes every login of `account` but `keep`; returns how many.
    ///
    /// # Errors
    /// The database error.
    pub async fn revoke_account_sessions(
        &self,
        account: Uuid,
        reason: &str,
        keep: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        self.exec(
            "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ? \
             WHERE account_id = ? AND revoked_at IS NULL AND id <> ?",
            vec![
                now_ms().into(),
                reason.into(),
                account.into(),
                keep.unwrap_or(Uuid::nil()).into(),
            ],
        )
        .await
    }

    // ---- members ----

    /// Gives `account` `role` in `project` (replacing its role there).
    ///
    /// # Errors
    /// The database error (a foreign key when either does not exist).
    pub async fn set_member(
        &self,
        project: Uuid,
        account: Uuid,
        role: Role,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO project_members (project_id, account_id, role, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (project_id, account_id) \
             DO UPDATE SET role = excluded.role",
            vec![
                project.into(),
                account.into(),
                role.name().into(),
                now_ms().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Removes `account` from `project`; whether it was a member.
    ///
    /// # Errors
    /// The database error.
    pub async fn remove_member(&self, project: Uuid, account: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .exec(
                "DELETE FROM project_members WHERE project_id = ? AND account_id = ?",
                vec![project.into(), account.into()],
            )
            .await?
            > 0)
    }

    /// The members of `project` with their roles, by e-mail.
    ///
    /// # Errors
    /// The database error.
    pub async fn members(&self, project: Uuid) -> Result<Vec<(Account, Role)>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS}, m.role FROM project_members m \
                     JOIN accounts a ON a.id = m.account_id WHERE m.project_id = ? \
                     ORDER BY a.email"
                ),
                vec![project.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get_by_index(7)?;
                Ok((account(r)?, Role::parse(&role).unwrap_or(Role::Viewer)))
            })
            .collect()
    }

    /// `account`'s role in `project`, if any.
    ///
    /// # Errors
    /// The database error.
    pub async fn role_of(&self, project: Uuid, account: Uuid) -> Result<Option<Role>, StoreError> {
        Ok(self
            .scalar::<String>(
                "SELECT role FROM project_members WHERE project_id = ? AND account_id = ?",
                vec![project.into(), account.into()],
            )
            .await?
            .and_then(|r| Role::parse(&r)))
    }

    /// The projects `account` is a member of, with its role in each.
    ///
    /// # Errors
    /// The database error.
    pub async fn memberships(&self, account: Uuid) -> Result<Vec<(Uuid, Role)>, StoreError> {
        let rows = self
            .rows(
                "SELECT project_id, role FROM project_members WHERE account_id = ? \
                 ORDER BY project_id",
                vec![account.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get_by_index(1)?;
                Ok((
                    r.try_get_by_index(0)?,
                    Role::parse(&role).unwrap_or(Role::Viewer),
                ))
            })
            .collect()
    }

    // ---- WebSocket tickets ----

    /// Stores a ticket (by hash) for `account` on `project` until
    /// `expires_at`.
    ///
    /// # Errors
    /// The database error.
    pub async fn create_ws_ticket(
        &self,
        hash: &str,
        account: Uuid,
        project: Uuid,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM ws_tickets WHERE expires_at < ?",
            vec![now_ms().into()],
        )
        .await?;
        self.exec(
            "INSERT INTO ws_tickets (ticket_hash, account_id, project_id, expires_at) \
             VALUES (?, ?, ?, ?)",
            vec![
                hash.into(),
                account.into(),
                project.into(),
                expires_at.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Uses the ticket `hash`: deletes it and returns its account and
    /// project when it was unexpired. A ticket works once, on whichever
    /// instance takes it first.
    ///
    /// # Errors
    /// The database error.
    pub async fn take_ws_ticket(&self, hash: &str) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let rows = self
            .rows(
                "DELETE FROM ws_tickets WHERE ticket_hash = ? \
                 RETURNING account_id, project_id, expires_at",
                vec![hash.into()],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let expires: i64 = r.try_get_by_index(2)?;
        if expires <= now_ms() {
            return Ok(None);
        }
        Ok(Some((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
    }

    // ---- failed logins ----

    /// The latest end of a lock on any of `subjects` that is still on at
    /// `now`.
    ///
    /// # Errors
    /// The database error.
    pub async fn login_locked_until(
        &self,
        subjects: &[String],
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut values: Vec<sea_orm::Value> = vec![now.into()];
        values.extend(subjects.iter().map(|s| s.as_str().into()));
        self.scalar::<i64>(
            &format!(
                "SELECT MAX(locked_until) FROM login_failures WHERE locked_until > ? \
                 AND subject IN ({})",
                vec!["?"; subjects.len()].join(", ")
            ),
            values,
        )
        .await
    }

    /// Counts a failed login against `subject`: failures within `window`
    /// ms of the first; the `limit`-th locks the subject for `window` ms.
    /// Returns the lock's end when this failure set one.
    ///
    /// # Errors
    /// The database error.
    pub async fn record_login_failure(
        &self,
        subject: &str,
        now: i64,
        window: i64,
        limit: i64,
    ) -> Result<Option<i64>, StoreError> {
        let rows = self
            .rows(
                "INSERT INTO login_failures (subject, failures, first_at, locked_until) \
                 VALUES (?, 1, ?, NULL) ON CONFLICT (subject) DO UPDATE SET \
                 failures = CASE WHEN login_failures.first_at <= ? THEN 1 \
                   ELSE login_failures.failures + 1 END, \
                 first_at = CASE WHEN login_failures.first_at <= ? THEN excluded.first_at \
                   ELSE login_failures.first_at END \
                 RETURNING failures",
                vec![
                    subject.into(),
                    now.into(),
                    (now - window).into(),
                    (now - window).into(),
                ],
            )
            .await?;
        let failures: i64 = rows
            .first()
            .map(|r| r.try_get_by_index(0))
            .transpose()?
            .unwrap_or(1);
        if failures < limit {
            return Ok(None);
        }
        let until = now + window;
        // The count starts again when the lock ends.
        self.exec(
            "UPDATE login_failures SET locked_until = ?, failures = 0, first_at = ? \
             WHERE subject = ?",
            vec![until.into(), until.into(), subject.into()],
        )
        .await?;
        Ok(Some(until))
    }

    /// Deletes what can no longer be used at `now`: expired refresh
    /// tokens, logins past their end, expired tickets, and failed-login
    /// counts older than `window` ms with no lock on. Answers how many rows
    /// went. Idempotent; any instance may run it.
    ///
    /// # Errors
    /// The database error.
    pub async fn purge_auth(&self, now: i64, window: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        for (sql, values) in [
            (
                "DELETE FROM refresh_tokens WHERE expires_at < ?",
                vec![now.into()],
            ),
            (
                "DELETE FROM refresh_tokens WHERE session_id IN \
                 (SELECT id FROM auth_sessions WHERE expires_at < ?)",
                vec![now.into()],
            ),
            (
                "DELETE FROM auth_sessions WHERE expires_at < ?",
                vec![now.into()],
            ),
            (
                "DELETE FROM ws_tickets WHERE expires_at < ?",
                vec![now.into()],
            ),
            (
                "DELETE FROM login_failures WHERE first_at < ? \
                 AND (locked_until IS NULL OR locked_until < ?)",
                vec![(now - window).into(), now.into()],
            ),
        ] {
            n += self.exec(sql, values).await?;
        }
        Ok(n)
    }

    /// Forgets the failed logins of `subject` (after a success).
    ///
    /// # Errors
    /// The database error.
    pub async fn clear_login_failures(&self, subject: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM login_failures WHERE subject = ? AND \
             (locked_until IS NULL OR locked_until < ?)",
            vec![subject.into(), now_ms().into()],
        )
        .await?;
        Ok(())
    }
}
