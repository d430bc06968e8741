//! The OpenAPI 3.1 description of the API, kept in the repo as docs/openapi.json and
//! served at `GET /v1/openapi.json`.

pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");
