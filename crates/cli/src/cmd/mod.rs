pub mod audit;
pub mod doctor;
pub mod image;
pub mod policy;
pub mod policy_flags;
pub mod run;
pub mod run_disk;
pub mod serve;
pub mod template;

// Clients of a running daemon (docs/api.md).
pub mod client;
pub mod events;
pub mod exec;
pub mod files;
pub mod keys;
pub mod kill_all;
pub mod local;
pub mod mcp;
pub mod sandbox;
pub mod shell;
pub mod tls;
pub mod volume;
