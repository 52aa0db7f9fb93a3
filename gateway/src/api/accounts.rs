//! Accounts (administrators: list, create, change, reset a password,
//! deactivate, delete) and the members of a project with their roles.

use orrery_core::store::Role;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

use crate::accounts::{check_password, normalize_email};
use crate::api::ApiTags;
use crate::api::auth::{AccountOut, Done};
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::{AppState, app_state};

/// A new account.
#[derive(Debug, Object)]
pub struct AccountIn {
    /// E-mail address (stored in lower case).
    #[oai(validator(
        min_length = 3,
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
    ))]
    pub email: String,
    /// At least 8 characters.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub password: String,
    /// Administers the instance.
    #[oai(default)]
    pub admin: bool,
}

/// Changes to an account; what is left out stays.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AccountPatch {
    /// New e-mail.
    #[oai(validator(
        min_length = 3,
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
    ))]
    pub email: Option<String>,
    /// Administers the instance (administrators only).
    pub admin: Option<bool>,
    /// May log in; `false` also ends its logins (administrators only).
    pub active: Option<bool>,
}

/// A new password set by an administrator.
#[derive(Debug, Object)]
pub struct PasswordResetIn {
    /// At least 8 characters.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub password: String,
}

/// Accounts.
#[derive(Debug, Object)]
pub struct AccountListOut {
    /// Oldest first.
    pub accounts: Vec<AccountOut>,
}

/// A role in a project: `owner` reads and administers it, `member` reads
/// everything in it, `viewer` reads its statistics and live stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RoleDto {
    /// Reads and administers the project.
    Owner,
    /// Reads everything in the project.
    Member,
    /// Reads the statistics (overview, time series, breakdowns, funnels,
    /// retention, users) and the live stream.
    Viewer,
}

impl From<RoleDto> for Role {
    fn from(r: RoleDto) -> Self {
        match r {
            RoleDto::Owner => Role::Owner,
            RoleDto::Member => Role::Member,
            RoleDto::Viewer => Role::Viewer,
        }
    }
}

impl From<Role> for RoleDto {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => RoleDto::Owner,
            Role::Member => RoleDto::Member,
            Role::Viewer => RoleDto::Viewer,
        }
    }
}

/// A member to add, or whose role to change.
#[derive(Debug, Object)]
pub struct MemberIn {
    /// The account's e-mail.
    #[oai(validator(
        min_length = 3,
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
    ))]
    pub email: String,
    // No doc comment: poem-openapi would wrap the enum in `allOf`, which
    // some client generators reject; `RoleDto` documents itself.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub role: RoleDto,
}

/// A member of a project.
#[derive(Debug, Object)]
pub struct MemberOut {
    /// The account.
    pub account: AccountOut,
    // No doc comment: poem-openapi would wrap the enum in `allOf`, which
    // some client generators reject; `RoleDto` documents itself.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub role: RoleDto,
}

/// Members of a project.
#[derive(Debug, Object)]
pub struct MemberListOut {
    /// By e-mail.
    pub members: Vec<MemberOut>,
}

/// Answer of create.
#[derive(ApiResponse)]
pub enum CreatedAccount {
    /// Created.
    #[oai(status = 201)]
    Created(Json<AccountOut>),
}

/// Accounts and members.
pub struct AccountsApi;

/// Refuses a change that leaves no active administrator account, when
/// `id` is one now.
async fn keep_an_admin(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let account = state.store.account(id).await?;
    if account.admin && account.active && state.store.count_active_admins().await? <= 1 {
        return Err(ApiError::new(
            ErrorCode::LastAdmin,
            "refused: this is the only active administrator account; make another one first",
        ));
    }
    Ok(())
}

fn is_self(auth: &SecretKey, id: Uuid) -> bool {
    auth.0.account().is_some_and(|a| a.id == id)
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Accounts")]
impl AccountsApi {
    /// List accounts
    ///
    /// Administrators (or an admin secret key) only.
    #[oai(path = "/users", method = "get", operation_id = "list_accounts")]
    async fn list(&self, req: &Request, auth: SecretKey) -> ApiResult<Json<AccountListOut>> {
        auth.0.require_admin()?;
        let accounts = app_state(req).store.list_accounts().await?;
        Ok(Json(AccountListOut {
            accounts: accounts.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create an account
    ///
    /// Administrators only.
    #[oai(path = "/users", method = "post", operation_id = "create_account")]
    async fn create(
        &self,
        req: &Request,
        auth: SecretKey,
        body: Json<AccountIn>,
    ) -> ApiResult<CreatedAccount> {
        auth.0.require_admin()?;
        let state = app_state(req);
        let email = normalize_email(&body.0.email)?;
        check_password("password", &body.0.password)?;
        let hash = state.accounts.hash_password(&body.0.password).await?;
        let account = state
            .store
            .create_account(&email, &hash, body.0.admin, false)
            .await?;
        Ok(CreatedAccount::Created(Json(account.into())))
    }

    /// Get an account
    ///
    /// Administrators, or the account itself.
    #[oai(
        path = "/users/:account_id",
        method = "get",
        operation_id = "get_account"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Account id.
        account_id: Path<Uuid>,
    ) -> ApiResult<Json<AccountOut>> {
        if !is_self(&auth, account_id.0) {
            auth.0.require_admin()?;
        }
        Ok(Json(
            app_state(req).store.account(account_id.0).await?.into(),
        ))
    }

    /// Change an account
    ///
    /// An account may change its own e-mail; administrators change any
    /// account's e-mail, admin flag and active flag. Deactivating ends the
    /// account's logins. The last active administrator stays one (409).
    #[oai(
        path = "/users/:account_id",
        method = "patch",
        operation_id = "update_account"
    )]
    async fn update(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Account id.
        account_id: Path<Uuid>,
        body: Json<AccountPatch>,
    ) -> ApiResult<Json<AccountOut>> {
        let state = app_state(req);
        let id = account_id.0;
        let body = body.0;
        let privileged = body.admin.is_some() || body.active.is_some();
        if privileged || !is_self(&auth, id) {
            auth.0.require_admin()?;
        }
        if body.admin == Some(false) || body.active == Some(false) {
            keep_an_admin(state, id).await?;
        }
        let email = body.email.as_deref().map(normalize_email).transpose()?;
        let account = state
            .store
            .update_account(id, email.as_deref(), body.admin, body.active)
            .await?;
        if body.active == Some(false) {
            state
                .store
                .revoke_account_sessions(id, "deactivated", None)
                .await?;
        }
        state.accounts.forget_all();
        Ok(Json(account.into()))
    }

    /// Delete an account
    ///
    /// Administrators only; ends its logins and memberships. The last
    /// active administrator cannot be deleted (409).
    #[oai(
        path = "/users/:account_id",
        method = "delete",
        operation_id = "delete_account"
    )]
    async fn delete(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Account id.
        account_id: Path<Uuid>,
    ) -> ApiResult<Done> {
        auth.0.require_admin()?;
        let state = app_state(req);
        keep_an_admin(state, account_id.0).await?;
        state.store.delete_account(account_id.0).await?;
        state.accounts.forget_all();
        Ok(Done::Done)
    }

    /// Reset a password
    ///
    /// Administrators only. Ends every login of the account.
    #[oai(
        path = "/users/:account_id/password",
        method = "post",
        operation_id = "reset_password"
    )]
    async fn reset_password(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Account id.
        account_id: Path<Uuid>,
        body: Json<PasswordResetIn>,
    ) -> ApiResult<Done> {
        auth.0.require_admin()?;
        let state = app_state(req);
        check_password("password", &body.0.password)?;
        let hash = state.accounts.hash_password(&body.0.password).await?;
        state.store.set_password_hash(account_id.0, &hash).await?;
        state
            .store
            .revoke_account_sessions(account_id.0, "password reset", None)
            .await?;
        state.accounts.forget_all();
        Ok(Done::Done)
    }

    /// List members
    ///
    /// The accounts of a project with their roles (members and owners).
    #[oai(
        path = "/projects/:project_id/members",
        method = "get",
        operation_id = "list_members"
    )]
    async fn members(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
    ) -> ApiResult<Json<MemberListOut>> {
        auth.0.require_project(project_id.0)?;
        let state = app_state(req);
        state.store.get_project(project_id.0).await?;
        let members = state.store.members(project_id.0).await?;
        Ok(Json(MemberListOut {
            members: members
                .into_iter()
                .map(|(a, r)| MemberOut {
                    account: a.into(),
                    role: r.into(),
                })
                .collect(),
        }))
    }

    /// Add or change a member
    ///
    /// Gives the account with that e-mail a role in the project (owners,
    /// administrators, the project's secret key).
    #[oai(
        path = "/projects/:project_id/members",
        method = "put",
        operation_id = "put_member"
    )]
    async fn put_member(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        body: Json<MemberIn>,
    ) -> ApiResult<Json<MemberOut>> {
        auth.0.require_project(project_id.0)?;
        let state = app_state(req);
        state.store.get_project(project_id.0).await?;
        let email = normalize_email(&body.0.email)?;
        let Some((account, _)) = state.store.account_by_email(&email).await? else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no account has the e-mail {email}"),
            ));
        };
        state
            .store
            .set_member(project_id.0, account.id, body.0.role.into())
            .await?;
        state.accounts.forget_all();
        Ok(Json(MemberOut {
            account: account.into(),
            role: body.0.role,
        }))
    }

    /// Remove a member
    #[oai(
        path = "/projects/:project_id/members/:account_id",
        method = "delete",
        operation_id = "delete_member"
    )]
    async fn delete_member(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Account id.
        account_id: Path<Uuid>,
    ) -> ApiResult<Done> {
        auth.0.require_project(project_id.0)?;
        let state = app_state(req);
        if !state
            .store
            .remove_member(project_id.0, account_id.0)
            .await?
        {
            return Err(ApiError::not_found("member"));
        }
        state.accounts.forget_all();
        Ok(Done::Done)
    }
}
