//! `safehouse volume create|ls|rm`: named, size-capped volumes on a daemon.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{field, finish, print_json, print_table, Client};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume of SIZE (e.g. 1GiB); mount it with `sandbox create --volume NAME:PATH`
    Create {
        name: String,
        #[arg(long, value_name = "SIZE")]
        size: String,
        /// Print the volume as JSON
        #[arg(long)]
        json: bool,
    },
    /// List this key's tenant's volumes
    Ls {
        /// Print `{"volumes": [...]}` as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete a volume and its files (refused while a sandbox mounts it)
    Rm { name: String },
}

pub fn main(c: VolumeCommand) -> i32 {
    finish(Client::from_env().and_then(|client| match c {
        VolumeCommand::Create { name, size, json } => {
            let v = client.send_json("POST", "/v1/volumes", &json!({ "name": name, "size": size }))?;
            if json {
                print_json(&v);
            } else {
                println!("{}", field(&v, "name"));
            }
            Ok(())
        }
        VolumeCommand::Ls { json } => ls(&client, json),
        VolumeCommand::Rm { name } => {
            client.delete(&format!("/v1/volumes/{}", urlencode(&name)), &[])?;
            println!("{name}");
            Ok(())
        }
    }))
}

fn ls(client: &Client, json: bool) -> Result<()> {
    let list = client.get_json("/v1/volumes", &[])?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| vec![field(v, "name"), field(v, "size"), field(v, "created_at")])
        .collect();
    print_table(&["NAME", "SIZE", "CREATED"], &rows);
    Ok(())
}

/// Volume names are checked by the daemon; anything odd is escaped, never a path.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
