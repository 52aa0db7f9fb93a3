//! Logging in: register the first administrator (or anyone, with
//! `auth.open_registration`), log in, refresh, log out, who am I, change
//! one's password, and single-use WebSocket tickets.
//!
//! Tokens come in the answer (API clients) or, with `"cookie": true`, as
//! HTTP-only cookies with a CSRF token for the page's script (the
//! dashboard). See [`crate::accounts`] for the tokens themselves.

use orrery_core::store::{Account, Role};
use poem::Request;
use poem::http::header::SET_COOKIE;
use poem_openapi::payload::{Json, Response};
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use crate::accounts::{REFRESH_COOKIE, Tokens, check_password, cookie_value, normalize_email};
use crate::api::ApiTags;
use crate::api::ingest::client_ip;
use crate::api::params::rfc3339_ms;
use crate::auth::{Caller, SecretKey};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::{AppState, app_state};

/// An account.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AccountOut {
    /// Account id.
    pub id: Uuid,
    /// E-mail (lower case).
    pub email: String,
    /// Administers the instance.
    pub admin: bool,
    /// May log in.
    pub active: bool,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Last changed, RFC 3339.
    pub updated_at: String,
    /// Last login, RFC 3339.
    pub last_login_at: Option<String>,
}

impl From<Account> for AccountOut {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            email: a.email,
            admin: a.admin,
            active: a.active,
            created_at: rfc3339_ms(a.created_at),
            updated_at: rfc3339_ms(a.updated_at),
            last_login_at: a.last_login_at.map(rfc3339_ms),
        }
    }
}

/// E-mail and password.
#[derive(Debug, Object)]
pub struct RegisterIn {
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
}

/// A login.
#[derive(Debug, Object)]
pub struct LoginIn {
    /// E-mail address.
    #[oai(validator(max_length = 254))]
    pub email: String,
    /// Password.
    #[oai(validator(max_length = 1024))]
    pub password: String,
    /// Set the tokens as HTTP-only cookies (and answer the CSRF token)
    /// instead of answering them.
    #[oai(default)]
    pub cookie: bool,
}

/// A refresh.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RefreshIn {
    /// The refresh token; omitted when it is in the cookie.
    #[oai(validator(max_length = 256))]
    pub refresh_token: Option<String>,
    /// Answer with cookies (as at login).
    #[oai(default)]
    pub cookie: bool,
}

/// Tokens of a login.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TokensOut {
    /// `Bearer`.
    pub token_type: String,
    /// The access token (JWT), unless in the cookie.
    pub access_token: Option<String>,
    /// Seconds the access token lasts.
    pub expires_in: u64,
    /// The refresh token, unless in the cookie; each one works once.
    pub refresh_token: Option<String>,
    /// Seconds the refresh token lasts.
    pub refresh_expires_in: u64,
    /// With cookies: the value to send in `X-CSRF-Token` on writes (also
    /// in the `orrery_csrf` cookie).
    pub csrf_token: Option<String>,
    /// Who logged in.
    pub account: AccountOut,
}

/// A project the caller belongs to.
#[derive(Debug, Object)]
pub struct MembershipOut {
    /// Project id.
    pub project_id: Uuid,
    /// `owner`, `member` or `viewer`.
    pub role: String,
}

/// Who is calling.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MeOut {
    /// The account, when a user calls.
    pub account: Option<AccountOut>,
    /// The key's id, when a secret key calls.
    pub key_id: Option<Uuid>,
    /// Administers the instance.
    pub admin: bool,
    /// The projects and roles (a key: its project, as `owner`).
    pub projects: Vec<MembershipOut>,
}

/// A password change.
#[derive(Debug, Object)]
pub struct PasswordIn {
    /// The current password.
    #[oai(validator(max_length = 1024))]
    pub current_password: String,
    /// The new one, at least 8 characters.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub new_password: String,
}

/// A ticket request.
#[derive(Debug, Object)]
pub struct TicketIn {
    /// The project whose live stream the ticket opens.
    pub project_id: Uuid,
}

/// A WebSocket ticket.
#[derive(Debug, Object)]
pub struct TicketOut {
    /// Pass as `?ticket=` when opening the WebSocket; works once.
    pub ticket: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
}

/// Answer of register.
#[derive(ApiResponse)]
pub enum Registered {
    /// Created.
    #[oai(status = 201)]
    Created(Json<AccountOut>),
}

/// Answer of logout and password change.
#[derive(ApiResponse)]
pub enum Done {
    /// Done.
    #[oai(status = 204)]
    Done,
}

/// Login and tokens.
pub struct AuthApi;

fn tokens_out(
    state: &AppState,
    tokens: &Tokens,
    account: Account,
    cookie: bool,
) -> Response<Json<TokensOut>> {
    let body = TokensOut {
        token_type: "Bearer".to_owned(),
        access_token: (!cookie).then(|| tokens.access.clone()),
        expires_in: tokens.access_secs,
        refresh_token: (!cookie).then(|| tokens.refresh.clone()),
        refresh_expires_in: tokens.refresh_secs,
        csrf_token: cookie.then(|| state.accounts.csrf_token(tokens.session)),
        account: account.into(),
    };
    let mut resp = Response::new(Json(body)).header("Cache-Control", "no-store");
    if cookie {
        for c in state.accounts.login_cookies(tokens) {
            resp = resp.header(SET_COOKIE, c);
        }
    }
    resp
}

/// The user behind the credentials (a key has none).
fn user_of(auth: &SecretKey) -> Result<&crate::auth::UserCaller, ApiError> {
    match &auth.0 {
        Caller::User(u) => Ok(u),
        Caller::Key(_) => Err(ApiError::forbidden(
            "this needs a logged-in account, not a key",
        )),
    }
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Register
    ///
    /// With no account yet, creates the first administrator (no
    /// credentials needed: do it right after installing, or use `orrery
    /// user create`). Afterwards only with `auth.open_registration = true`
    /// (a plain account); administrators create accounts with `POST
    /// /api/v1/users`.
    #[oai(path = "/register", method = "post", operation_id = "register")]
    async fn register(&self, req: &Request, body: Json<RegisterIn>) -> ApiResult<Registered> {
        let state = app_state(req);
        let email = normalize_email(&body.0.email)?;
        check_password("password", &body.0.password)?;
        let first = state.store.count_accounts().await? == 0;
        if !first && !state.accounts.config().open_registration {
            return Err(ApiError::new(
                ErrorCode::RegistrationClosed,
                "registration is closed: an administrator creates accounts (auth.open_registration is off)",
            ));
        }
        let hash = state.accounts.hash_password(&body.0.password).await?;
        let account = state
            .store
            .create_account(&email, &hash, first, first)
            .await?;
        Ok(Registered::Created(Json(account.into())))
    }

    /// Log in
    ///
    /// Answers an access token (`Authorization: Bearer`, 15 minutes by
    /// default) and a refresh token (7 days), or sets them as cookies with
    /// `"cookie": true`. Wrong e-mail and wrong password get the same 401
    /// in the same time. After `auth.lockout_attempts` failures (5) within
    /// `auth.lockout_secs` (15 minutes), the account and the client address
    /// are locked for that long: 429 `login_locked` with `Retry-After`.
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        req: &Request,
        body: Json<LoginIn>,
    ) -> ApiResult<Response<Json<TokensOut>>> {
        let state = app_state(req);
        let body = body.0;
        let email = body.email.trim().to_lowercase();
        let ip = client_ip(req, &state.config.http.trusted_proxies);
        state.accounts.check_lock(&state.store, &email, ip).await?;
        let found = state.store.account_by_email(&email).await?;
        let ok = state
            .accounts
            .verify_password(found.as_ref().map(|(_, h)| h.as_str()), &body.password)
            .await?;
        let Some((account, _)) = found.filter(|_| ok) else {
            state
                .accounts
                .failed_login(&state.store, &email, ip)
                .await?;
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidCredentials,
                "wrong e-mail or password",
            ));
        };
        if !account.active {
            return Err(ApiError::new(
                ErrorCode::AccountDeactivated,
                "this account is deactivated; ask an administrator",
            ));
        }
        state.accounts.good_login(&state.store, &email).await?;
        state.store.touch_login(account.id).await?;
        let tokens = state.accounts.start_login(&state.store, account.id).await?;
        let account = state.store.account(account.id).await?;
        Ok(tokens_out(state, &tokens, account, body.cookie))
    }

    /// Refresh
    ///
    /// Spends the refresh token (from the body or the cookie) and answers
    /// a new access and refresh token. A refresh token used twice revokes
    /// its whole login (someone else holds a copy): 401
    /// `refresh_token_reused`.
    #[oai(path = "/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(
        &self,
        req: &Request,
        body: Json<RefreshIn>,
    ) -> ApiResult<Response<Json<TokensOut>>> {
        let state = app_state(req);
        let from_cookie = body.0.refresh_token.is_none();
        let token = body
            .0
            .refresh_token
            .clone()
            .or_else(|| cookie_value(req, REFRESH_COOKIE).map(str::to_owned))
            .ok_or_else(|| {
                ApiError::unauthorized(
                    ErrorCode::InvalidToken,
                    "no refresh token: send `refresh_token` or the orrery_refresh cookie",
                )
            })?;
        let (tokens, account) = state.accounts.refresh(&state.store, &token).await?;
        Ok(tokens_out(
            state,
            &tokens,
            account,
            body.0.cookie || from_cookie,
        ))
    }

    /// Log out
    ///
    /// Ends the login of the access token: its access and refresh tokens
    /// stop working on every instance (within
    /// `auth.revocation_check_ms`), and the cookies are cleared.
    #[oai(path = "/logout", method = "post", operation_id = "logout")]
    async fn logout(&self, req: &Request, auth: SecretKey) -> ApiResult<Response<Done>> {
        let state = app_state(req);
        let user = user_of(&auth)?;
        state
            .store
            .revoke_auth_session(user.user.session, "logout")
            .await?;
        state.accounts.forget_login(user.user.session);
        let mut resp = Response::new(Done::Done);
        for c in state.accounts.clear_cookies() {
            resp = resp.header(SET_COOKIE, c);
        }
        Ok(resp)
    }

    /// Who am I
    ///
    /// The account (or key) of the credentials and the projects it sees
    /// with its role in each.
    #[oai(path = "/me", method = "get", operation_id = "me")]
    async fn me(&self, req: &Request, auth: SecretKey) -> ApiResult<Json<MeOut>> {
        let state = app_state(req);
        Ok(Json(match &auth.0 {
            Caller::Key(p) => MeOut {
                account: None,
                key_id: Some(p.key.id),
                admin: p.is_admin(),
                projects: vec![MembershipOut {
                    project_id: p.project_id(),
                    role: Role::Owner.name().to_owned(),
                }],
            },
            Caller::User(u) => {
                let account = state.store.account(u.user.account.id).await?;
                let mut projects = Vec::new();
                for (project, role) in state.store.memberships(account.id).await? {
                    projects.push(MembershipOut {
                        project_id: project,
                        role: role.name().to_owned(),
                    });
                }
                MeOut {
                    admin: account.admin,
                    account: Some(account.into()),
                    key_id: None,
                    projects,
                }
            }
        }))
    }

    /// Change my password
    ///
    /// Needs the current password. Ends every other login of the account.
    #[oai(path = "/password", method = "post", operation_id = "change_password")]
    async fn password(
        &self,
        req: &Request,
        auth: SecretKey,
        body: Json<PasswordIn>,
    ) -> ApiResult<Done> {
        let state = app_state(req);
        let user = user_of(&auth)?;
        check_password("new_password", &body.0.new_password)?;
        let (account, hash) = state.store.account_with_hash(user.user.account.id).await?;
        if !state
            .accounts
            .verify_password(Some(&hash), &body.0.current_password)
            .await?
        {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidCredentials,
                "`current_password` is wrong",
            ));
        }
        let hash = state.accounts.hash_password(&body.0.new_password).await?;
        state.store.set_password_hash(account.id, &hash).await?;
        state
            .store
            .revoke_account_sessions(account.id, "password changed", Some(user.user.session))
            .await?;
        state.accounts.forget_all();
        Ok(Done::Done)
    }

    /// WebSocket ticket
    ///
    /// A single-use ticket, valid 30 seconds (`auth.ticket_secs`), that opens the live stream of
    /// one project (`GET /api/v1/projects/{id}/live?ticket=...`), so that
    /// no token travels in a WebSocket URL. Any role in the project will do.
    #[oai(path = "/ws-ticket", method = "post", operation_id = "ws_ticket")]
    async fn ws_ticket(
        &self,
        req: &Request,
        auth: SecretKey,
        body: Json<TicketIn>,
    ) -> ApiResult<Json<TicketOut>> {
        let state = app_state(req);
        let user = user_of(&auth)?;
        let project = body.0.project_id;
        let account = &user.user.account;
        if !account.admin
            && state
                .accounts
                .role(&state.store, account.id, project)
                .await?
                .is_none()
        {
            return Err(ApiError::not_found("project"));
        }
        state.store.get_project(project).await?;
        let ticket = state
            .accounts
            .new_ticket(&state.store, account.id, project)
            .await?;
        Ok(Json(TicketOut {
            ticket,
            expires_in: state.accounts.config().ticket_secs,
        }))
    }
}
