//! `metroctl webhook add|list|remove`: the webhook station's endpoints.

use std::path::Path;

use clap::Subcommand;
use serde_json::{json, Value};

use super::conn::Connection;
use super::{output, CliError};
use crate::proto::{self, Request};

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create an endpoint; prints its id, path and URL.
    Add {
        /// A name for humans (shown as the line's name).
        label: String,
        /// Require this secret: GitHub's X-Hub-Signature-256, or
        /// `Authorization: Bearer <secret>`. `-` reads it from stdin,
        /// `@FILE` from a file, `env:NAME` from the environment.
        #[arg(long, value_name = "SECRET")]
        secret: Option<String>,
    },
    /// List endpoints (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint; its URL answers 404 from then on.
    Remove { id: String },
}

pub fn run(socket: &Path, cmd: WebhookCommand) -> Result<(), CliError> {
    let mut conn = Connection::open(socket)?;
    match cmd {
        WebhookCommand::Add { label, secret } => {
            let secret = secret
                .map(|s| super::secret::resolve("--secret", &s))
                .transpose()?;
            let a = conn.call(&Request::WebhookAdd(proto::WebhookAdd { label, secret }))?;
            print_fields(&a, &["id", "label", "path", "url"]);
        }
        WebhookCommand::List { json } => {
            let a = conn.call(&Request::WebhookList)?;
            let eps = a["endpoints"].as_array().cloned().unwrap_or_default();
            if output::json_mode(json) {
                for e in &eps {
                    println!("{e}");
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = eps
                .iter()
                .map(|e| {
                    vec![
                        str_of(e, "id"),
                        str_of(e, "label"),
                        if e["hasSecret"] == json!(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        str_of(e, "createdAt"),
                        match e["url"].as_str() {
                            Some(u) => u.to_string(),
                            None => str_of(e, "path"),
                        },
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["ID", "LABEL", "SECRET", "CREATED", "URL"], &rows)
            );
        }
        WebhookCommand::Remove { id } => {
            let a = conn.call(&Request::WebhookRemove(proto::WebhookRemove { id }))?;
            print_fields(&a, &["id", "removed"]);
        }
    }
    Ok(())
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("-").to_string()
}

/// The answer's fields as one JSON object.
fn print_fields(a: &Value, keys: &[&str]) {
    let mut out = serde_json::Map::new();
    for k in keys {
        out.insert(k.to_string(), a[*k].clone());
    }
    println!("{}", Value::Object(out));
}
