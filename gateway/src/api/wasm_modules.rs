//! Uploaded WebAssembly modules: upload once (validated), run many times by
//! id through `POST /api/v1/execute`. Each project has its own modules,
//! kept in `<data_dir>/wasm/<project>/` across restarts.

use chrono::DateTime;
use orrery_sandbox::ModuleInfo;
use orrery_sandbox::wasm::WasmKind;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use crate::api::ApiTags;
use crate::api::execute::{executor, sandbox_error};
use crate::api::params::Name;
use crate::auth::ExecuteKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::app_state;

/// Core module or component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ModuleKind {
    /// A WASI preview 1 command module (exports `_start`).
    Module,
    /// A WASI preview 2 component (exports `wasi:cli/run`).
    Component,
}

/// A stored module.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ModuleOut {
    /// Hex SHA-256 of the module: its id.
    pub id: String,
    // No doc comment: see `KeyOut::kind`.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub kind: ModuleKind,
    /// Size in bytes.
    pub size: u64,
    /// Name given at upload.
    pub name: Option<String>,
    /// Upload time, RFC 3339.
    pub created_at: String,
}

impl From<ModuleInfo> for ModuleOut {
    fn from(m: ModuleInfo) -> Self {
        Self {
            id: m.id,
            kind: match m.kind {
                WasmKind::Module => ModuleKind::Module,
                WasmKind::Component => ModuleKind::Component,
            },
            size: m.size,
            name: m.name,
            created_at: DateTime::from_timestamp(i64::try_from(m.created_at).unwrap_or(0), 0)
                .unwrap_or_default()
                .to_rfc3339(),
        }
    }
}

/// The module list.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ModuleListOut {
    /// Modules of the key's project.
    pub modules: Vec<ModuleOut>,
}

/// Answer of upload.
#[derive(ApiResponse)]
pub enum Uploaded {
    /// Validated and stored (uploading the same bytes again answers the
    /// same id).
    #[oai(status = 201)]
    Created(Json<ModuleOut>),
}

/// Answer of delete.
#[derive(ApiResponse)]
pub enum Removed {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// WebAssembly module storage.
pub struct WasmModulesApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Execute")]
impl WasmModulesApi {
    /// Upload a module
    ///
    /// The body is the binary module or component (`application/wasm`).
    /// It is validated now: bytes that are not WebAssembly, or a program
    /// without a WASI entry point, are a 400 naming the problem.
    #[oai(
        path = "/wasm/modules",
        method = "post",
        operation_id = "upload_module"
    )]
    async fn upload(
        &self,
        req: &Request,
        auth: ExecuteKey,
        /// A name for people.
        name: Query<Option<Name>>,
        body: Binary<Vec<u8>>,
    ) -> ApiResult<Uploaded> {
        let ex = executor(app_state(req))?;
        if body.0.is_empty() {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidModule,
                "the body is empty",
            ));
        }
        let store = ex.modules(auth.0.project_id())?;
        let info = store
            .upload(body.0, name.0.map(Name::into_inner))
            .await
            .map_err(sandbox_error)?;
        Ok(Uploaded::Created(Json(info.into())))
    }

    /// List modules
    #[oai(path = "/wasm/modules", method = "get", operation_id = "list_modules")]
    async fn list(&self, req: &Request, auth: ExecuteKey) -> ApiResult<Json<ModuleListOut>> {
        let ex = executor(app_state(req))?;
        let modules = ex.modules(auth.0.project_id())?.list();
        Ok(Json(ModuleListOut {
            modules: modules.into_iter().map(Into::into).collect(),
        }))
    }

    /// Get a module
    #[oai(
        path = "/wasm/modules/:module_id",
        method = "get",
        operation_id = "get_module"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: ExecuteKey,
        /// Module id (hex SHA-256).
        module_id: Path<String>,
    ) -> ApiResult<Json<ModuleOut>> {
        let ex = executor(app_state(req))?;
        let info = ex
            .modules(auth.0.project_id())?
            .get(&module_id.0)
            .map_err(sandbox_error)?;
        Ok(Json(info.into()))
    }

    /// Delete a module
    #[oai(
        path = "/wasm/modules/:module_id",
        method = "delete",
        operation_id = "delete_module"
    )]
    async fn delete(
        &self,
        req: &Request,
        auth: ExecuteKey,
        /// Module id (hex SHA-256).
        module_id: Path<String>,
    ) -> ApiResult<Removed> {
        let ex = executor(app_state(req))?;
        ex.modules(auth.0.project_id())?
            .delete(&module_id.0)
            .map_err(sandbox_error)?;
        Ok(Removed::Deleted)
    }
}
