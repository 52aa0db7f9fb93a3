//! The gateway's HTTP application in this process, driven through
//! `poem::test::TestClient`: the same routes, middleware, services and
//! database as the binary, without a socket or a child process. For
//! handler logic; what needs the real binary (durability, signals,
//! connection limits, the sandbox) stays with [`crate::Server`].

use orrery_core::config::Config;
use orrery_gateway::state::{AppState, State};
use poem::endpoint::BoxEndpoint;
use poem::test::TestClient;
use poem::{EndpointExt, Response};

use crate::api::{Answer, Api};
use crate::database::{Backend, TestDatabase};
use crate::server::InitKeys;

/// A gateway application in this process, on a fresh data directory and
/// database, with a first project and its keys.
pub struct InProcess {
    /// The gateway's state (its store, writer, pipelines, metrics).
    pub state: AppState,
    /// The keys of the first project.
    pub keys: InitKeys,
    /// The database the application runs on.
    pub backend: Backend,
    client: TestClient<BoxEndpoint<'static, Response>>,
    // Dropped last: the database after the state's connections are gone.
    _database: TestDatabase,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("backend", &self.backend)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl InProcess {
    /// The application on SQLite with the default configuration.
    pub async fn sqlite() -> Self {
        Self::on(Backend::Sqlite, |_| {}).await
    }

    /// The application on a fresh database of `backend`, with the default
    /// configuration changed by `configure` (the code-execution service is
    /// off: it needs the real binary).
    pub async fn on(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("orrery-inprocess-")
            .tempdir()
            .expect("tempdir");
        let database = TestDatabase::create(backend).await;
        let mut config = Config {
            data_dir: tmp.path().join("data"),
            database_url: database.url.clone(),
            ..Config::default()
        };
        config.execute.enabled = false;
        // One client for the per-IP limits, as in `Server::launch`.
        config.rate_limit.ingest_per_sec = 0.0;
        config.rate_limit.auth_per_minute = 0.0;
        configure(&mut config);
        std::fs::create_dir_all(&config.data_dir).expect("data directory");
        let state = State::open(config).await.expect("open the gateway state");
        let first = orrery_gateway::commands::first_project(&state.store, "test")
            .await
            .expect("first project");
        let keys = InitKeys {
            project_id: first.project.id.to_string(),
            public_key: first.public_key,
            secret_key: first.secret_key,
        };
        let client = TestClient::new(orrery_gateway::app(state.clone()).boxed());
        Self {
            state,
            keys,
            backend,
            client,
            _database: database,
            _tmp: tmp,
        }
    }
}

impl Api for InProcess {
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let method: poem::http::Method = method.parse().expect("an HTTP method");
        let mut req = self.client.request(method, path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.0;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = resp.into_body().into_vec().await.expect("read the answer");
        Answer {
            status,
            headers,
            body,
        }
    }

    fn keys(&self) -> &InitKeys {
        &self.keys
    }
}

/// Runs `f` on a fresh in-process application on each backend of
/// [`crate::backends`], one after the other.
pub async fn each_backend_in_process(test: &str, mut f: impl AsyncFnMut(&mut InProcess)) {
    for backend in crate::backends(test) {
        let mut app = InProcess::on(backend, |_| {}).await;
        f(&mut app).await;
    }
}
