//! `safehouse keys create|ls|revoke`: API keys for tenants (needs the admin key).

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{field, finish, print_json, print_table, seg, Client};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant; prints the key, which is shown only this once
    Create {
        /// The tenant the key acts for (its sandboxes are invisible to other tenants)
        #[arg(long)]
        tenant: String,
        /// A label to recognise the key by
        #[arg(long)]
        name: Option<String>,
        /// Print `{id, key, e2b_key, tenant, ...}` as JSON
        #[arg(long)]
        json: bool,
        /// Print the key in its E2B form (`e2b_` + hex, for E2B_API_KEY; docs/e2b.md)
        #[arg(long, conflicts_with = "json")]
        e2b: bool,
    },
    /// List keys (never their secrets)
    Ls {
        /// Print `{"keys": [...]}` as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id; requests with it fail from now on
    Revoke { id: String },
}

pub fn main(c: KeysCommand) -> i32 {
    finish(Client::from_env().and_then(|client| match c {
        KeysCommand::Create { tenant, name, json, e2b } => create(&client, tenant, name, json, e2b),
        KeysCommand::Ls { json } => ls(&client, json),
        KeysCommand::Revoke { id } => {
            client.delete(&format!("/v1/keys/{}", seg(&id)), &[])?;
            println!("{id}");
            Ok(())
        }
    }))
}

fn create(client: &Client, tenant: String, name: Option<String>, json: bool, e2b: bool) -> Result<()> {
    let mut body = json!({ "tenant": tenant });
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    let key = client.send_json("POST", "/v1/keys", &body)?;
    if json {
        print_json(&key);
    } else {
        // The secret alone on stdout (for `$(...)`); the rest for the person.
        println!("{}", field(&key, if e2b { "e2b_key" } else { "key" }));
        eprintln!(
            "created key {} for tenant {} (the key is not shown again)",
            field(&key, "id"),
            field(&key, "tenant")
        );
    }
    Ok(())
}

fn ls(client: &Client, json: bool) -> Result<()> {
    let list = client.get_json("/v1/keys", &[])?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let empty = Vec::new();
    let keys = list.get("keys").and_then(Value::as_array).unwrap_or(&empty);
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![field(k, "id"), field(k, "tenant"), field(k, "name"), field(k, "created_at"), field(k, "revoked_at")]
        })
        .collect();
    print_table(&["ID", "TENANT", "NAME", "CREATED", "REVOKED"], &rows);
    Ok(())
}
