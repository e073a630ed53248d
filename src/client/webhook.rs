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
    #[command(after_help = super::help::WEBHOOK_ADD)]
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
    #[command(after_help = super::help::WEBHOOK_LIST)]
    List {
        #[command(flatten)]
        json: super::Json,
    },
    /// Remove an endpoint; its URL answers 404 from then on.
    #[command(after_help = super::help::WEBHOOK_REMOVE)]
    Remove {
        /// The endpoint's id (as `webhook list` shows it).
        id: String,
    },
}

pub fn run(socket: &Path, cmd: WebhookCommand) -> Result<(), CliError> {
    let mut conn = Connection::open(socket)?;
    match cmd {
        WebhookCommand::Add { label, secret } => {
            let secret = secret
                .map(|s| super::secret::resolve("--secret", &s))
                .transpose()?;
            let a = conn.call(&Request::WebhookAdd(proto::WebhookAdd { label, secret }))?;
            if output::json_mode(false) {
                print_fields(&a, &["id", "label", "path", "url"]);
            } else {
                output::say(format!(
                    "added webhook {} (id {})",
                    output::paint(output::style::BOLD, str_of(&a, "label")),
                    str_of(&a, "id")
                ));
                let url = a["url"].as_str().map(String::from).unwrap_or_else(|| {
                    format!("{} (the listener is off: no URL)", str_of(&a, "path"))
                });
                output::say(format!("POST to {url}"));
            }
        }
        WebhookCommand::List {
            json: super::Json { json },
        } => {
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
            if rows.is_empty() {
                output::note("no webhook endpoints: `metroctl webhook add NAME` makes one");
                return Ok(());
            }
            output::say(output::table(
                &["ID", "LABEL", "SECRET", "CREATED", "URL"],
                &rows,
            ));
        }
        WebhookCommand::Remove { id } => {
            let a = conn.call(&Request::WebhookRemove(proto::WebhookRemove { id }))?;
            if output::json_mode(false) {
                print_fields(&a, &["id", "removed"]);
            } else if a["removed"] == json!(true) {
                output::say(format!("removed webhook {}", str_of(&a, "id")));
            } else {
                output::say(format!("no webhook {}", str_of(&a, "id")));
            }
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
