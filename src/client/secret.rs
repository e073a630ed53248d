//! Secrets given to metroctl flags (`--secret`, `--telegram-token`,
//! `--discord-token`): `-` reads one line of stdin, `@FILE` reads a file,
//! `env:NAME` reads an environment variable. A secret written on the
//! command line itself still works, with a warning: every local user sees
//! it in `ps`.

use std::io::BufRead;

use super::CliError;

/// The secret `v` stands for (trailing newline dropped).
pub fn resolve(flag: &str, v: &str) -> Result<String, CliError> {
    let got = if v == "-" {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(CliError::Io)?;
        line
    } else if let Some(path) = v.strip_prefix('@') {
        // Never quote the file in an error: it holds a secret.
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{flag}: cannot read {path}: {e}")))?
    } else if let Some(name) = v.strip_prefix("env:") {
        std::env::var(name).map_err(|_| {
            CliError::Usage(format!(
                "{flag}: environment variable {name} is not set (or not UTF-8)"
            ))
        })?
    } else {
        if !v.is_empty() {
            eprintln!(
                "metroctl: warning: a secret in {flag} on the command line is visible to every local user (ps); use {flag} - (stdin), {flag} @FILE or {flag} env:NAME"
            );
        }
        v.to_string()
    };
    Ok(got.trim_end_matches(['\n', '\r']).to_string())
}
