//! Projects: create, list, get, rename, delete.

use orrery_core::store::{KeyKind, Project};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::keys::CreatedKeyOut;
use crate::api::params::{Name, rfc3339_ms};
use crate::auth::SecretKey;
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
    /// Needs an admin secret key. Answers the project with a new public and
    /// secret key, shown only in this answer.
    #[oai(path = "/projects", method = "post", operation_id = "create_project")]
    async fn create(
        &self,
        req: &Request,
        auth: SecretKey,
        body: Json<ProjectIn>,
    ) -> ApiResult<CreatedProject> {
        auth.0.require_admin()?;
        let state = state(req);
        let name = body.0.name.into_inner();
        let project = state.store.create_project(&name).await?;
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
    /// An admin key sees every project; another secret key sees its own.
    #[oai(path = "/projects", method = "get", operation_id = "list_projects")]
    async fn list(&self, req: &Request, auth: SecretKey) -> ApiResult<Json<ProjectListOut>> {
        let only = (!auth.0.is_admin()).then(|| auth.0.project_id());
        let projects = state(req).store.list_projects(only).await?;
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
    /// Needs an admin secret key. Deletes the project's keys, events and
    /// dead letters. The project holding the key in use cannot be deleted.
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
        auth.0.require_admin()?;
        if auth.0.project_id() == project_id.0 {
            return Err(ApiError::new(
                ErrorCode::ProjectInUse,
                "this project holds the key of this request; use an admin key of another project",
            ));
        }
        let state = state(req);
        state.store.delete_project(project_id.0).await?;
        state.keys.clear();
        Ok(Deleted::Deleted)
    }
}
