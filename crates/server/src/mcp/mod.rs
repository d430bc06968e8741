//! The MCP server (Model Context Protocol): sandboxes as tools for AI clients. One
//! implementation, inside the daemon: JSON-RPC (`jsonrpc`), the MCP methods (`protocol`),
//! the tools (`tools`, described in `schema`), sessions (`session`) and the streamable HTTP
//! transport at `/mcp` (`http`). `safehouse mcp` (the stdio transport) forwards each
//! message to `/mcp`, so both transports run exactly this code. docs/mcp.md documents it.

pub mod http;
pub mod jsonrpc;
pub mod protocol;
pub mod schema;
pub mod session;
pub mod tools;

pub use session::Sessions;
