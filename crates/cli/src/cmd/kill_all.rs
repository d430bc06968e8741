//! `safehouse kill-all`: the emergency stop. With the admin key, every sandbox on the
//! daemon; with any other key, that tenant's own. Returns once nothing of them runs.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::client::{field, finish, print_json, Client};

#[derive(Args)]
pub struct KillAllArgs {
    /// Print `{"killed": N, "ms": T}` as JSON
    #[arg(long)]
    json: bool,
}

pub fn main(a: KillAllArgs) -> i32 {
    finish(Client::from_env().and_then(|client| -> Result<()> {
        let r = client.send_json("POST", "/v1/kill-all", &json!({}))?;
        if a.json {
            print_json(&r);
        } else {
            println!("killed {} sandbox(es) in {} ms", field(&r, "killed"), field(&r, "ms"));
        }
        Ok(())
    }))
}
