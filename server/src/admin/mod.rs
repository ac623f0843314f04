//! The admin HTTP API: its own listener (`[admin] listen`), bearer-token authentication, and
//! JSON endpoints under `/api/v1` for points, sessions, plugins, reloads and drains.
//!
//! Reads come straight from the shared tables; everything that changes the running server
//! goes to the server's control loop as an [`AdminRequest`], so API changes never interleave
//! with reloads. Only `/healthz` and `/readyz` are open without a token.

pub mod api;
pub mod auth;
pub mod client;
pub mod edit;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::AdminConfig;
use crate::events;
use crate::reload::control;
use crate::state::Shared;

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// The live status page, embedded in the binary.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// The hand-written OpenAPI description of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Something only the control loop may do.
#[derive(Debug)]
pub enum AdminRequest {
    /// A request the control socket also takes (reload, drain, status).
    Control(control::Request),
    /// The plugin generations, as JSON.
    Plugins,
    /// Set which protocols serve a point: written to the file, then reloaded.
    SetProtocols {
        point: String,
        protocols: Vec<String>,
    },
}

/// The control loop's answer.
#[derive(Debug)]
pub enum AdminAnswer {
    Reply(control::Reply),
    Json(Value),
}

pub type AdminEnvelope = (AdminRequest, oneshot::Sender<AdminAnswer>);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for the admin API on {address}: {source}; change [admin] listen or free the port")]
pub struct AdminBindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// The bound admin listener, ready to serve.
pub struct AdminListener {
    listener: TcpListener,
    /// The `[tls.<name>]` the API is served with, if any.
    tls: Option<String>,
    tokens: Arc<Vec<String>>,
    metrics_allow: Arc<Vec<std::net::IpAddr>>,
}

impl AdminListener {
    pub async fn bind(config: &AdminConfig) -> Result<Self, AdminBindError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AdminBindError {
                address: config.listen,
                source,
            })?;
        Ok(Self {
            listener,
            tls: config.tls.clone(),
            tokens: Arc::new(config.tokens.clone()),
            metrics_allow: Arc::new(config.metrics_allow.clone()),
        })
    }

    pub fn local_address(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve the API until the task is aborted.
    pub async fn serve(self, shared: Arc<Shared>, requests: mpsc::Sender<AdminEnvelope>) {
        let address = self.local_address();
        let tls = self.tls.clone().map(|name| (name, Arc::clone(&shared.tls)));
        let state = ApiState {
            shared,
            requests,
            tokens: self.tokens,
            metrics_allow: self.metrics_allow,
        };
        let router = api::routes()
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authenticate,
            ))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(state);
        info!(address = ?address, tls = tls.is_some(), "admin API ready");
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let served = match tls {
            None => axum::serve(self.listener, service).await,
            Some((name, registry)) => {
                use axum::serve::ListenerExt;
                let incoming = tls::TlsIncoming::start(self.listener, name, registry);
                axum::serve(incoming.tap_io(|_| ()), service).await
            }
        };
        if let Err(error) = served {
            warn!(event = events::ADMIN_FAILED, %error, "the admin API stopped");
        }
    }
}

/// What every handler reaches.
#[derive(Clone)]
pub(crate) struct ApiState {
    shared: Arc<Shared>,
    requests: mpsc::Sender<AdminEnvelope>,
    /// No hashes (allowed on loopback only) means no authentication.
    tokens: Arc<Vec<String>>,
    /// Peers that may scrape `/metrics` without a token.
    metrics_allow: Arc<Vec<std::net::IpAddr>>,
}

impl ApiState {
    /// Ask the control loop and wait for its answer.
    async fn ask(&self, request: AdminRequest) -> Result<AdminAnswer, ApiError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let gone = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
        self.requests
            .send((request, reply_tx))
            .await
            .map_err(|_| gone())?;
        reply_rx.await.map_err(|_| gone())
    }
}

/// Paths anyone may ask: probes for load balancers and supervisors, and the status page
/// itself (static; the figures on it come from the API, with the operator's token).
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/")
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let allowed_scraper = request.uri().path() == "/metrics"
        && peer.is_some_and(|peer| state.metrics_allow.contains(&peer.ip()));
    if state.tokens.is_empty() || is_open(request.uri().path()) || allowed_scraper {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let tokens = Arc::clone(&state.tokens);
    // argon2 is deliberately slow: verify off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth::authorized(header.as_deref(), &tokens))
        .await
        .unwrap_or(false);
    if ok {
        return next.run(request).await;
    }
    let peer = peer.map(|peer| peer.to_string()).unwrap_or_default();
    info!(event = events::ADMIN_UNAUTHORIZED, %peer, method = %request.method(), path = %request.uri().path(), "admin request without a valid token refused");
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required: send `Authorization: Bearer <token>`",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// A JSON error: `{ "error": message, "field": the offending input or null }`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    fn on(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "field": self.field }));
        (self.status, body).into_response()
    }
}
