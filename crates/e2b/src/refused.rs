//! What E2B's API has and safehouse does not (yet): every such route under the front is
//! answered in E2B's `{code, message}` shape, naming what is missing, so the SDK raises an
//! exception with that message (never a `KeyError: 'code'` on a body it cannot read). Each
//! comes with its own issue (templates, persistence); wiring it into the front replaces the
//! refusal here.

use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;

use crate::e2b_error;

/// The features E2B's API has that safehouse does not serve yet, by path prefix.
const NOT_YET: &[(&str, &str)] = &[
    ("/v3/templates", "templates (building and managing them)"),
    ("/v2/templates", "templates (building and managing them)"),
    ("/templates", "templates (building and managing them)"),
];

/// Sandbox routes of E2B's API that safehouse does not serve yet, by last segment.
const NOT_YET_ON_SANDBOX: &[(&str, &str)] = &[("network", "changing a running sandbox's network (network updates)")];

fn not_yet(what: &str) -> Response {
    e2b_error(
        StatusCode::NOT_IMPLEMENTED,
        format!("{what}: not supported by safehouse yet (docs/e2b.md lists what its E2B front serves)"),
    )
}

/// Any route under `/templates`, `/volumes` (every generation).
pub async fn feature(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    match NOT_YET.iter().find(|(p, _)| path.starts_with(p)) {
        Some((_, what)) => not_yet(what),
        None => unknown(method, uri).await,
    }
}

/// `/sandboxes/{id}/{rest}` and `/v2/sandboxes/{id}/{rest}` that no route took.
pub async fn sandbox_route(method: Method, uri: Uri) -> Response {
    let last = uri.path().rsplit('/').next().unwrap_or("");
    match NOT_YET_ON_SANDBOX.iter().find(|(seg, _)| *seg == last) {
        Some((_, what)) => not_yet(what),
        None => unknown(method, uri).await,
    }
}

/// A path under the front that is not E2B's: 404 in E2B's shape.
pub async fn unknown(method: Method, uri: Uri) -> Response {
    e2b_error(
        StatusCode::NOT_FOUND,
        format!(
            "{method} {} is not a route of the E2B API safehouse serves (docs/e2b.md lists them)",
            shown(uri.path())
        ),
    )
}

/// A route of the front asked with a method it does not take: 405 in E2B's shape.
pub async fn wrong_method(method: Method, uri: Uri) -> Response {
    e2b_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not a method of {} (docs/e2b.md lists the routes)", shown(uri.path())),
    )
}

/// A path as shown in a message: printable, at most 200 characters.
fn shown(path: &str) -> String {
    path.chars().filter(|c| c.is_ascii_graphic()).take(200).collect()
}

/// `/templates/{id}`: `DELETE` of a snapshot is the SDK's `delete_snapshot` (snapshots are
/// templates in E2B's API); every other template call is refused by name.
pub async fn template(
    axum::extract::State(st): axum::extract::State<crate::E2b>,
    safehouse_http::params::Caller(tenant): safehouse_http::params::Caller,
    method: Method,
    uri: Uri,
) -> Response {
    let id = uri.path().rsplit('/').next().unwrap_or("");
    if method == Method::DELETE && safehouse_manager::ids::is_snapshot_id(id) {
        return crate::persist::delete_snapshot(&st, &tenant, id).await;
    }
    feature(method, uri).await
}
