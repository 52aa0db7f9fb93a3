//! Projects: create, list, get, rename, delete.

use std::collections::HashSet;

use orrery_core::store::{KeyKind, Project, Role};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::keys::CreatedKeyOut;
use crate::api::params::{Name, rfc3339_ms};
use crate::auth::{Caller, SecretKey};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::app_state as state;

/// A project.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProjectOut {
    /// Project id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Last changed, RFC 3339.
    pub updated_at: String,
}

impl From<Project> for ProjectOut {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: rfc3339_ms(p.created_at),
            updated_at: rfc3339_ms(p.updated_at),
        }
    }
}

/// Body of create and rename.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProjectIn {
    // No doc comment: the schema of `Name` documents it.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub name: Name,
}

/// A new project with its first keys, shown once.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreatedProjectOut {
    /// The project.
    pub project: ProjectOut,
    /// Public ingest key (`pk_...`), safe to embed in a web page.
    pub public_key: CreatedKeyOut,
    /// Secret key (`sk_...`) for reading and administering this project.
    pub secret_key: CreatedKeyOut,
}

/// The project list.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProjectListOut {
    /// Projects, oldest first.
    pub projects: Vec<ProjectOut>,
}

/// Answer of create.
#[derive(ApiResponse)]
pub enum CreatedProject {
    /// Created; the keys are shown only now.
    #[oai(status = 201)]
    Created(Json<CreatedProjectOut>),
}

/// Answer of delete.
#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted with its keys, events and dead letters.
    #[oai(status = 204)]
    Deleted,
}

/// Project administration.
pub struct ProjectsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Projects")]
impl ProjectsApi {
    /// Create a project
    ///
    /// Needs an admin secret key, or a logged-in account (which becomes
    /// the project's owner). Answers the project with a new public and
    /// secret key, shown only in this answer.
    #[oai(path = "/projects", method = "post", operation_id = "create_project")]
    async fn create(
        &self,
        req: &Request,
        auth: SecretKey,
        body: Json<ProjectIn>,
    ) -> ApiResult<CreatedProject> {
        let account = auth.0.account().map(|a| a.id);
        if account.is_none() {
            auth.0.require_admin()?;
        }
        let state = state(req);
        let name = body.0.name.into_inner();
        let project = state.store.create_project(&name).await?;
        if let Some(account) = account {
            state
                .store
                .set_member(project.id, account, Role::Owner)
                .await?;
            state.accounts.forget_all();
        }
        let public = state
            .store
            .create_key(project.id, "default public key", KeyKind::Public, false)
            .await?;
        let secret = state
            .store
            .create_key(project.id, "default secret key", KeyKind::Secret, false)
            .await?;
        state.keys.clear();
        Ok(CreatedProject::Created(Json(CreatedProjectOut {
            project: project.into(),
            public_key: public.into(),
            secret_key: secret.into(),
        })))
    }

    /// List projects
    ///
    /// An admin key or administrator sees every project; another secret
    /// key sees its own, an account those it is a member of.
    #[oai(path = "/projects", method = "get", operation_id = "list_projects")]
    async fn list(&self, req: &Request, auth: SecretKey) -> ApiResult<Json<ProjectListOut>> {
        let state = state(req);
        let projects = match &auth.0 {
            _ if auth.0.is_admin() => state.store.list_projects(None).await?,
            Caller::Key(p) => state.store.list_projects(Some(p.project_id())).await?,
            Caller::User(u) => {
                let mine: HashSet<Uuid> = state
                    .store
                    .memberships(u.user.account.id)
                    .await?
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
                let mut all = state.store.list_projects(None).await?;
                all.retain(|p| mine.contains(&p.id));
                all
            }
        };
        Ok(Json(ProjectListOut {
            projects: projects.into_iter().map(Into::into).collect(),
        }))
    }

    /// Get a project
    #[oai(
        path = "/projects/:project_id",
        method = "get",
        operation_id = "get_project"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
    ) -> ApiResult<Json<ProjectOut>> {
        auth.0.require_project(project_id.0)?;
        Ok(Json(
            state(req).store.get_project(project_id.0).await?.into(),
        ))
    }

    /// Rename a project
    #[oai(
        path = "/projects/:project_id",
        method = "patch",
        operation_id = "rename_project"
    )]
    async fn rename(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        body: Json<ProjectIn>,
    ) -> ApiResult<Json<ProjectOut>> {
        auth.0.require_project(project_id.0)?;
        let name = body.0.name.into_inner();
        Ok(Json(
            state(req)
                .store
                .rename_project(project_id.0, &name)
                .await?
                .into(),
        ))
    }

    /// Delete a project
    ///
    /// Needs an admin secret key, an administrator or the project's owner.
    /// Deletes the project's keys, events and dead letters. The project
    /// holding the key in use cannot be deleted.
    #[oai(
        path = "/projects/:project_id",
        method = "delete",
        operation_id = "delete_project"
    )]
    async fn delete(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        match &auth.0 {
            Caller::Key(p) => {
                p.require_admin()?;
                if p.project_id() == project_id.0 {
                    return Err(ApiError::new(
                        ErrorCode::ProjectInUse,
                        "this project holds the key of this request; use an admin key of another project",
                    ));
                }
            }
            Caller::User(_) => auth.0.require_project(project_id.0)?,
        }
        let state = state(req);
        state.store.delete_project(project_id.0).await?;
        state.keys.clear();
        Ok(Deleted::Deleted)
    }
}
