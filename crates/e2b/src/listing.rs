//! `GET /v2/sandboxes` (and the first generation's `GET /sandboxes`): the caller's running
//! and paused sandboxes, newest first as E2B lists them (`order=asc` for oldest first),
//! filtered by `metadata`, `state`, `startedAfter` and `template`, in pages of `limit`
//! whose next page's token comes back in `x-next-token`.

use std::cmp::Ordering;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use safehouse_http::params::{parse_query, Caller, QueryPairs};
use safehouse_http::ApiError;
use safehouse_manager::auth::Tenant;
use safehouse_manager::{ListFilter, SandboxInfo, SandboxState};

use crate::control::{answer, listed_json, template_of};
use crate::E2b;

/// Page size when none is asked for, and the largest.
const DEFAULT_LIMIT: usize = 100;

/// Where a sandbox sits in the listing: its start (whole seconds) and, for sandboxes
/// started in the same second, its id. Also what a page token names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    started: i64,
    id: String,
}

impl Place {
    fn of(info: &SandboxInfo) -> Place {
        Place { started: unix(&info.created_at).unwrap_or(0), id: info.id.clone() }
    }

    /// The page token: `<unix seconds>_<id>` (opaque to the SDK).
    fn token(&self) -> String {
        format!("{}_{}", self.started, self.id)
    }

    fn parse_token(t: &str) -> Result<Place, ApiError> {
        t.split_once('_')
            .and_then(|(s, id)| Some(Place { started: s.parse().ok()?, id: id.to_string() }))
            .filter(|p| safehouse_http::params::is_sandbox_id(&p.id))
            .ok_or_else(|| ApiError::invalid("nextToken is not a token this daemon gave; list again from the start"))
    }
}

fn unix(rfc3339: &str) -> Option<i64> {
    OffsetDateTime::parse(rfc3339, &Rfc3339).ok().map(OffsetDateTime::unix_timestamp)
}

/// What a listing asks for.
#[derive(Debug)]
struct Query {
    filter: ListFilter,
    states: Vec<SandboxState>,
    limit: usize,
    descending: bool,
    /// Sandboxes started at or after (Unix seconds).
    started_after: Option<i64>,
    template: Option<String>,
    after: Option<Place>,
}

fn parse(q: &QueryPairs) -> Result<Query, ApiError> {
    q.only(&["metadata", "state", "limit", "nextToken", "order", "startedAfter", "template"])?;
    let mut filter = ListFilter::default();
    if let Some(m) = q.get("metadata") {
        // `key=value&key2=value2`, each side percent-encoded once more.
        for (k, v) in parse_query(m)? {
            filter.metadata.insert(k, v);
        }
    }
    let mut states = Vec::new();
    for s in q.get("state").unwrap_or("running,paused").split(',').filter(|s| !s.is_empty()) {
        states.push(match s {
            "running" => SandboxState::Running,
            "paused" => SandboxState::Frozen,
            other => return Err(ApiError::invalid(format!("state {other:?} is not running or paused"))),
        });
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=DEFAULT_LIMIT).contains(l))
            .ok_or_else(|| ApiError::invalid(format!("limit must be between 1 and {DEFAULT_LIMIT}")))?,
    };
    let descending = match q.get("order") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::invalid(format!("order {other:?}: use \"asc\" or \"desc\" (the default)")))
        }
    };
    let started_after = match q.get("startedAfter") {
        None => None,
        Some(t) => Some(unix(t).ok_or_else(|| {
            ApiError::invalid(format!("startedAfter {t:?} is not an RFC 3339 time (2026-01-31T12:00:00Z)"))
        })?),
    };
    let template = q.get("template").filter(|t| !t.is_empty()).map(str::to_string);
    let after = q.get("nextToken").filter(|t| !t.is_empty()).map(Place::parse_token).transpose()?;
    Ok(Query { filter, states, limit, descending, started_after, template, after })
}

/// `GET /v2/sandboxes` and `GET /sandboxes`.
pub async fn list(State(st): State<E2b>, Caller(tenant): Caller, q: QueryPairs) -> Response {
    answer(list_inner(&st, &tenant, &q).await)
}

async fn list_inner(st: &E2b, tenant: &Tenant, q: &QueryPairs) -> Result<Response, ApiError> {
    let q = parse(q)?;
    let found = st.manager.list(&tenant.name, &q.filter).await?;
    let mut rows: Vec<(Place, SandboxInfo)> = found
        .into_iter()
        .filter(|s| q.states.contains(&s.state))
        .filter(|s| q.template.as_ref().is_none_or(|t| template_of(st, s) == *t))
        .map(|s| (Place::of(&s), s))
        .filter(|(p, _)| q.started_after.is_none_or(|t| p.started >= t))
        .collect();
    let order = |a: &Place, b: &Place| if q.descending { b.cmp(a) } else { a.cmp(b) };
    rows.sort_by(|a, b| order(&a.0, &b.0));
    if let Some(after) = &q.after {
        rows.retain(|(p, _)| order(p, after) == Ordering::Greater);
    }
    let more = rows.len() > q.limit;
    rows.truncate(q.limit);
    let items: Vec<Value> = rows.iter().map(|(_, s)| listed_json(st, s, None)).collect();
    let mut resp = Json(items).into_response();
    if let (true, Some((last, _))) = (more, rows.last()) {
        if let Ok(v) = HeaderValue::from_str(&last.token()) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(s: &str) -> Result<Query, ApiError> {
        parse(&QueryPairs(parse_query(s).unwrap()))
    }

    #[test]
    fn queries_parse_and_refuse_by_name() {
        let q = query("").unwrap();
        assert!(q.descending && q.limit == DEFAULT_LIMIT && q.started_after.is_none());
        let q = query("order=asc&startedAfter=2026-01-31T12%3A00%3A00%2B01%3A00&template=base&limit=2").unwrap();
        assert!(!q.descending);
        assert_eq!(q.started_after, Some(unix("2026-01-31T11:00:00Z").unwrap()));
        assert_eq!((q.template.as_deref(), q.limit), (Some("base"), 2));
        assert!(query("order=up").unwrap_err().message.contains("order"));
        assert!(query("startedAfter=yesterday").unwrap_err().message.contains("startedAfter"));
        assert!(query("nextToken=sb_x").unwrap_err().message.contains("nextToken"));
        assert!(query("limit=0").is_err() && query("colour=red").is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_order() {
        let a = Place { started: 10, id: "sb_aaaaaaaaaaaaaaaaaaaaaaaaaa".into() };
        let b = Place { started: 10, id: "sb_bbbbbbbbbbbbbbbbbbbbbbbbbb".into() };
        let c = Place { started: 9, id: "sb_zzzzzzzzzzzzzzzzzzzzzzzzzz".into() };
        assert_eq!(Place::parse_token(&a.token()).unwrap(), a);
        let mut v = vec![c.clone(), a.clone(), b.clone()];
        v.sort_by(|x, y| y.cmp(x));
        assert_eq!(v, vec![b, a, c]);
    }
}
