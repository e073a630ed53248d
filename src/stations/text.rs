//! Text and file helpers shared by the chat stations: splitting long
//! texts, checking the files an agent sends, saving the files it
//! downloads, and finding an event in the log.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::proto::WireError;
use crate::store::log::Log;

/// Length in UTF-16 code units, as Telegram counts (and, conservatively,
/// as metro counts for Discord, whose limit is in characters).
pub fn units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Splits `text` into parts of at most `limit` UTF-16 units: at the last
/// paragraph break, else line break, else space, before the limit (the
/// separator is dropped); a part with none of those is cut hard.
pub fn split(text: &str, limit: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while units(rest) > limit {
        // The longest prefix within the limit, on a char boundary.
        let mut n = 0;
        let mut end = 0;
        for (i, c) in rest.char_indices() {
            if n + c.len_utf16() > limit {
                break;
            }
            n += c.len_utf16();
            end = i + c.len_utf8();
        }
        let head = &rest[..end];
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| head.rfind(sep).filter(|&i| i > 0).map(|i| (i, sep.len())));
        match cut {
            Some((i, sep)) => {
                parts.push(&rest[..i]);
                rest = &rest[i + sep..];
            }
            None => {
                parts.push(head);
                rest = &rest[end..];
            }
        }
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest);
    }
    parts
}

/// The rows of a `buttons` field: rows of buttons (`[[b, b], [b]]`) or one
/// row (`[b, b]`), each button made by `button` (which says what is wrong
/// with one); empty rows are dropped, no buttons at all is an error.
pub fn button_rows<B>(
    v: &Value,
    button: impl Fn(&Value) -> Result<B, String>,
) -> Result<Vec<Vec<B>>, WireError> {
    let bad = |why: String| WireError::bad_request(format!("field `buttons`: {why}"));
    let Value::Array(items) = v else {
        return Err(bad(
            "expected an array of buttons or of rows of buttons".into()
        ));
    };
    let rows: Vec<&Value> = if items.iter().all(Value::is_array) {
        items.iter().collect()
    } else {
        vec![v]
    };
    let mut out = Vec::new();
    for row in rows {
        let buttons = row
            .as_array()
            .into_iter()
            .flatten()
            .map(&button)
            .collect::<Result<Vec<B>, String>>()
            .map_err(bad)?;
        if !buttons.is_empty() {
            out.push(buttons);
        }
    }
    if out.is_empty() {
        return Err(bad("no buttons".into()));
    }
    Ok(out)
}

/// A `send` has something to send, and buttons only under a text.
pub fn check_send(text: &str, has_files: bool, has_buttons: bool) -> Result<(), WireError> {
    if text.trim().is_empty() && !has_files {
        return Err(WireError::bad_request(
            "nothing to send: `text` is empty and there are no files",
        ));
    }
    if has_buttons && text.trim().is_empty() {
        return Err(WireError::bad_request("buttons need a non-empty `text`"));
    }
    Ok(())
}

/// An absolute path to an existing file, from field `field` of a request.
pub fn existing_file(path: &str, field: &str) -> Result<PathBuf, WireError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(WireError::bad_request(format!(
            "field `{field}`: {path:?} is not an absolute path (the daemon's working directory is not yours)"
        )));
    }
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(_) => Err(WireError::bad_request(format!(
            "field `{field}`: {path} is not a file"
        ))),
        Err(e) => Err(WireError::bad_request(format!(
            "field `{field}`: cannot read {path}: {e}"
        ))),
    }
}

/// A file name from a sender, without directories or a leading dot:
/// control and format characters (U+202E right-to-left override, zero
/// widths, ...) become `_`, then whitespace is trimmed and leading dots
/// stripped until neither is left, so `" .bashrc"` is `bashrc`.
pub fn safe_name(name: &str) -> Option<String> {
    let base = Path::new(name).file_name()?.to_str()?;
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_control() || is_format_char(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut rest = clean.as_str();
    loop {
        let next = rest.trim().trim_start_matches('.');
        if next == rest {
            break;
        }
        rest = next;
    }
    (!rest.is_empty()).then(|| rest.to_string())
}

/// Unicode general category Cf (format characters), Unicode 15.
fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Creates `dir/name`, or `dir/name (2)`… when it exists: never overwrites.
pub async fn create_new(dir: &Path, name: &str) -> std::io::Result<(PathBuf, tokio::fs::File)> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    for n in 1..1000 {
        let candidate = if n == 1 {
            dir.join(name)
        } else {
            dir.join(format!("{stem} ({n}){ext}"))
        };
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&candidate)
            .await
        {
            Ok(f) => return Ok((candidate, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("too many files named {name}"),
    ))
}

/// The newest log entry that contains `needle` and satisfies `pred`,
/// reading backwards from the end.
pub async fn find_in_log(
    log: &Log,
    needle: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Option<Value>, WireError> {
    let needle = needle.as_bytes();
    let mut before = log.end();
    let mut chunk = 256 << 10;
    while before > 0 {
        let (lines, next) = log
            .read_back(before, chunk)
            .await
            .map_err(|e| WireError::internal(format!("could not read the log: {e}")))?;
        for (_, json) in lines {
            if !json.windows(needle.len()).any(|w| w == needle) {
                continue;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&json) {
                if pred(&v) {
                    return Ok(Some(v));
                }
            }
        }
        if next >= before {
            break;
        }
        before = next;
        chunk = (chunk * 2).min(8 << 20);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_prefers_paragraphs_then_lines_then_spaces() {
        let para = format!("{}\n\n{}", "a".repeat(3000), "b".repeat(3000));
        assert_eq!(split(&para, 4096), vec!["a".repeat(3000), "b".repeat(3000)]);
        let lines = format!("{}\n{}", "a".repeat(3000), "b".repeat(3000));
        assert_eq!(split(&lines, 4096).len(), 2);
        let words = format!("{} {}", "a".repeat(3000), "b".repeat(3000));
        assert_eq!(
            split(&words, 4096),
            vec!["a".repeat(3000), "b".repeat(3000)]
        );
        let solid = "x".repeat(9000);
        let parts = split(&solid, 4096);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [4096, 4096, 808]
        );
        assert_eq!(split("short", 4096), vec!["short"]);
        // Emoji count twice, as in Telegram; never cut inside a char.
        let emoji = "😀".repeat(3000);
        let parts = split(&emoji, 4096);
        assert!(parts.iter().all(|p| units(p) <= 4096));
        assert_eq!(parts.concat(), emoji);
    }

    #[tokio::test]
    async fn downloaded_files_are_created_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, _f) = create_new(dir.path(), "a.txt").await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn sender_file_names_stay_in_the_directory() {
        assert_eq!(safe_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(safe_name(".bashrc").as_deref(), Some("bashrc"));
        assert_eq!(safe_name("..").as_deref(), None);
        assert_eq!(safe_name("report.pdf").as_deref(), Some("report.pdf"));
        // Trim first, then strip dots (issue 14): no dotfile slips through.
        assert_eq!(safe_name(" .bashrc").as_deref(), Some("bashrc"));
        assert_eq!(safe_name("\u{a0}.profile").as_deref(), Some("profile"));
        assert_eq!(safe_name(". .ssh").as_deref(), Some("ssh"));
        assert_eq!(safe_name(" . ").as_deref(), None);
        // Format characters never reach a file name.
        assert_eq!(
            safe_name("invoice\u{202e}fdp.exe").as_deref(),
            Some("invoice_fdp.exe")
        );
        assert_eq!(safe_name("a\u{200b}b").as_deref(), Some("a_b"));
    }
}
