//! The routes of the admin API and their handlers.

use std::time::UNIX_EPOCH;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::{AdminAnswer, AdminRequest, ApiError, ApiState, OPENAPI};
use crate::events;
use crate::points::{Point, PointMedia};
use crate::reload::control::{DrainTarget, Request};
use crate::state::SessionEntry;

/// Every route, as `(method, path)`; the OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/api/v1/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/status"),
    ("get", "/api/v1/points"),
    ("get", "/api/v1/points/{name}"),
    ("put", "/api/v1/points/{name}/protocols"),
    ("post", "/api/v1/points/{name}/drain"),
    ("post", "/api/v1/points/{name}/undrain"),
    ("get", "/api/v1/sessions"),
    ("delete", "/api/v1/sessions/{id}"),
    ("get", "/api/v1/plugins"),
    ("post", "/api/v1/plugins/{name}/drain"),
    ("post", "/api/v1/plugins/{name}/undrain"),
    ("post", "/api/v1/reload"),
];

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(status_page))
        .route("/api/v1/events", get(events_stream))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/status", get(status))
        .route("/api/v1/points", get(points))
        .route("/api/v1/points/{name}", get(point))
        .route("/api/v1/points/{name}/protocols", put(set_protocols))
        .route("/api/v1/points/{name}/drain", post(drain_point))
        .route("/api/v1/points/{name}/undrain", post(undrain_point))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/sessions/{id}", delete(kick))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/plugins/{name}/drain", post(drain_plugin))
        .route("/api/v1/plugins/{name}/undrain", post(undrain_plugin))
        .route("/api/v1/reload", post(reload))
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; GET /api/v1/openapi.json lists them",
    )
    .on("path")
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready once the control loop answers: every listener is bound by then.
async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    state.ask(AdminRequest::Plugins).await?;
    Ok(Json(json!({ "status": "ready" })))
}

/// Prometheus metrics (text format 0.0.4).
async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let mut snapshot = crate::metrics::Snapshot::default();
    if let AdminAnswer::Json(Value::Array(generations)) = state.ask(AdminRequest::Plugins).await? {
        snapshot.generations = generations
            .iter()
            .map(|g| {
                (
                    g["plugin"].as_str().unwrap_or_default().to_owned(),
                    g["generation"].as_u64().unwrap_or_default(),
                    g["role"].as_str().unwrap_or_default().to_owned(),
                    g["sessions"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
    }
    snapshot.plugin_metrics = state
        .shared
        .all_plugin_counters()
        .into_iter()
        .map(|(plugin, counters)| (plugin, counters.snapshot()))
        .collect();
    snapshot.sent_bytes = state
        .shared
        .sessions
        .sent_by_point()
        .into_iter()
        .map(|((point, protocol), bytes)| {
            (crate::metrics::PointProtocol { point, protocol }, bytes)
        })
        .collect();
    let sessions = state.shared.sessions.list();
    let points = state.shared.points.load();
    for name in points.names() {
        let Some(point) = points.get(name) else {
            continue;
        };
        for protocol in &point.protocols {
            let count = sessions
                .iter()
                .filter(|s| s.point.as_deref() == Some(name) && s.uses_plugin(protocol))
                .count();
            let labels = crate::metrics::PointProtocol {
                point: name.to_owned(),
                protocol: protocol.clone(),
            };
            snapshot.clients.push((labels, count as i64));
        }
        if let PointMedia::Live(stream) = &point.media {
            let status = stream.status();
            snapshot
                .source_states
                .push((name.to_owned(), status.state.as_str()));
            snapshot
                .reconnects
                .push((name.to_owned(), status.reconnects));
            snapshot
                .ingest_rates
                .push((name.to_owned(), status.ingest_bits_per_second));
            snapshot
                .source_lost
                .push((name.to_owned(), status.source_lost.as_secs_f64()));
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&snapshot),
    ))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The live status page: static HTML and script; every figure on it comes from the API.
async fn status_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::STATUS_PAGE,
    )
}

/// Server-sent events: the status document every second.
async fn events_stream(
    State(state): State<ApiState>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let updates = futures_util::stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let status = status_value(&state).await.ok()?;
        let event = Event::default().event("status").data(status.to_string());
        Some((Ok(event), (state, false)))
    });
    Sse::new(updates).keep_alive(KeepAlive::default())
}

/// The status document; with `Accept: text/plain`, the text `ferrocast status` prints.
async fn status(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let wants_text = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.starts_with("text/plain"));
    if !wants_text {
        return Ok(Json(status_value(&state).await?).into_response());
    }
    match state.ask(AdminRequest::Control(Request::Status)).await? {
        AdminAnswer::Reply(reply) => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reply.text,
        )
            .into_response()),
        AdminAnswer::Json(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected answer",
        )),
    }
}

async fn status_value(state: &ApiState) -> Result<Value, ApiError> {
    let plugins = match state.ask(AdminRequest::Plugins).await? {
        AdminAnswer::Json(plugins) => plugins,
        AdminAnswer::Reply(reply) => Value::String(reply.text),
    };
    let drains = state.shared.drains();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "points": all_points(state),
        "plugins": plugins,
        "sessions": state.shared.sessions.list().len(),
        "draining": { "points": drains.points, "plugins": drains.plugins },
    }))
}

fn all_points(state: &ApiState) -> Vec<Value> {
    let points = state.shared.points.load();
    let sessions = state.shared.sessions.list();
    points
        .names()
        .into_iter()
        .filter_map(|name| points.get(name))
        .map(|point| point_json(state, point, &sessions))
        .collect()
}

async fn points(State(state): State<ApiState>) -> Json<Value> {
    Json(Value::Array(all_points(&state)))
}

async fn point(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let points = state.shared.points.load();
    let point = points.get(&name).ok_or_else(|| unknown_point(&name))?;
    Ok(Json(point_json(
        &state,
        point,
        &state.shared.sessions.list(),
    )))
}

fn unknown_point(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("there is no publishing point named `{name}`"),
    )
    .on("name")
}

fn point_json(state: &ApiState, point: &Point, sessions: &[SessionEntry]) -> Value {
    let mut clients = serde_json::Map::new();
    for protocol in &point.protocols {
        let count = sessions
            .iter()
            .filter(|s| s.point.as_deref() == Some(&point.name) && s.uses_plugin(protocol))
            .count();
        clients.insert(protocol.clone(), json!(count));
    }
    let mut value = json!({
        "name": point.name,
        "kind": point.kind.as_str(),
        "protocols": point.protocols,
        "clients": clients,
        "draining": state.shared.drains().points.contains(&point.name),
    });
    let (source, live) = match &point.media {
        PointMedia::Live(stream) => {
            let source = match &point.pull {
                Some(pull) => json!({ "pull": pull.url.to_string() }),
                None => json!("push"),
            };
            (source, Some(stream.status()))
        }
        PointMedia::File(path) => (json!({ "file": path }), None),
        PointMedia::Directory(path) => (json!({ "directory": path }), None),
    };
    value["source"] = source;
    value["state"] = json!(live.as_ref().map_or("on-demand", |s| s.state.as_str()));
    if let Some(live) = live {
        value["subscribers"] = json!(live.clients);
        value["reconnects"] = json!(live.reconnects);
        value["ingest_bits_per_second"] = json!(live.ingest_bits_per_second);
        value["uptime_ms"] = json!(live.uptime.map(|d| d.as_millis() as u64));
        value["source_lost_ms"] = json!(live.source_lost.as_millis() as u64);
        value["last_error"] = json!(live.last_error);
        value["grace_left_ms"] = json!(live.grace_left.map(|d| d.as_millis() as u64));
        let source = live.source_description.unwrap_or_default();
        value["source_name"] = json!((!source.name.is_empty()).then_some(source.name));
        value["source_description"] =
            json!((!source.description.is_empty()).then_some(source.description));
    }
    if let Some(hls) = state.shared.hls.status_of(&point.name) {
        value["hls"] = json!({
            "segments": hls.segments,
            "bytes": hls.bytes,
            "max_bytes": hls.max_bytes,
            "evicted_for_memory": hls.evicted_for_memory,
            "next_msn": hls.next_msn,
        });
    }
    value
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolsBody {
    protocols: Vec<String>,
}

/// Enable or disable protocols on a point, exactly as editing the file and reloading would.
async fn set_protocols(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<ProtocolsBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(ProtocolsBody { protocols }) = body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!(
                "{}; send {{\"protocols\": [\"http\", ...]}}",
                rejection.body_text()
            ),
        )
        .on("body")
    })?;
    if state.shared.points.load().get(&name).is_none() {
        return Err(unknown_point(&name));
    }
    let plugins = state.shared.plugins.load();
    if let Some(unknown) = protocols.iter().find(|p| !plugins.contains_key(p.as_str())) {
        let loaded: Vec<&str> = plugins.keys().map(String::as_str).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "`{unknown}` is not an enabled plugin; enabled: {}",
                loaded.join(", ")
            ),
        )
        .on("protocols"));
    }
    let request = AdminRequest::SetProtocols {
        point: name.clone(),
        protocols: protocols.clone(),
    };
    match state.ask(request).await? {
        AdminAnswer::Reply(reply) if reply.ok => Ok(Json(json!({
            "point": name,
            "protocols": protocols,
            "plan": reply.text,
        }))),
        AdminAnswer::Reply(reply) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reply.text).on("protocols"))
        }
        AdminAnswer::Json(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected answer",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct SessionFilter {
    point: Option<String>,
    plugin: Option<String>,
}

async fn sessions(
    State(state): State<ApiState>,
    Query(filter): Query<SessionFilter>,
) -> Json<Value> {
    let listed = state
        .shared
        .sessions
        .list()
        .into_iter()
        .filter(|s| filter.point.is_none() || s.point == filter.point)
        .filter(|s| filter.plugin.as_ref().map_or(true, |p| s.uses_plugin(p)))
        .map(|s| {
            let started = s
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            json!({
                "id": s.id,
                "plugin": s.plugin,
                "transports": s.transports,
                "point": s.point,
                "peer": s.peer.to_string(),
                "started_unix": started,
                "bytes_sent": s.sent.get(),
            })
        })
        .collect();
    Json(Value::Array(listed))
}

async fn kick(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("session id `{id}` is not a number"),
        )
        .on("id")
    })?;
    if !state.shared.kick_session(id) {
        return Err(
            ApiError::new(StatusCode::NOT_FOUND, format!("there is no session {id}")).on("id"),
        );
    }
    info!(
        event = events::SESSION_KICKED,
        session = id,
        "session ended by an operator"
    );
    Ok(Json(json!({ "kicked": id })))
}

async fn plugins(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    match state.ask(AdminRequest::Plugins).await? {
        AdminAnswer::Json(value) => Ok(Json(value)),
        AdminAnswer::Reply(reply) => Ok(Json(json!({ "text": reply.text }))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadOptions {
    /// Only look for new plugin builds; the file is not read.
    #[serde(default)]
    plugins_only: bool,
}

async fn reload(
    State(state): State<ApiState>,
    options: Result<Query<ReloadOptions>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(options) = options.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()).on("plugins_only")
    })?;
    let request = if options.plugins_only {
        Request::ReloadPlugins
    } else {
        Request::Reload
    };
    let AdminAnswer::Reply(reply) = state.ask(AdminRequest::Control(request)).await? else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected answer",
        ));
    };
    let status = if reply.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = if reply.ok {
        json!({ "applied": true, "plan": reply.text })
    } else {
        json!({ "error": reply.text, "field": null })
    };
    Ok((status, Json(body)))
}

async fn drain(
    state: ApiState,
    target: DrainTarget,
    name: String,
    on: bool,
) -> Result<Json<Value>, ApiError> {
    let request = Request::Drain {
        target,
        name: name.clone(),
        on,
    };
    match state.ask(AdminRequest::Control(request)).await? {
        AdminAnswer::Reply(reply) if reply.ok => Ok(Json(json!({
            "target": target.as_str(),
            "name": name,
            "draining": on,
            "message": reply.text.trim_end(),
        }))),
        AdminAnswer::Reply(reply) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, reply.text.trim_end()).on("name"))
        }
        AdminAnswer::Json(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected answer",
        )),
    }
}

async fn drain_point(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    drain(state, DrainTarget::Point, name, true).await
}

async fn undrain_point(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    drain(state, DrainTarget::Point, name, false).await
}

async fn drain_plugin(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    drain(state, DrainTarget::Plugin, name, true).await
}

async fn undrain_plugin(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    drain(state, DrainTarget::Plugin, name, false).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The OpenAPI document describes exactly the routes served.
    #[test]
    fn openapi_lists_exactly_the_routes() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = BTreeSet::new();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(method, path)| (method.to_string(), path.to_string()))
            .collect();
        assert_eq!(documented, served);
    }
}
