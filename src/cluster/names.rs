//! Names on the NATS side: node names in subjects and consumer names, line
//! URIs as KV keys, and the fixed names of the stream and buckets.

/// The stream every node publishes its own events to.
pub const STREAM: &str = "METRO_EVENTS";
/// Subjects of that stream: `metro.events.<node>`.
pub const SUBJECT_PREFIX: &str = "metro.events.";
/// The claims bucket (line → owner).
pub const CLAIMS_BUCKET: &str = "metro-claims";
/// The leases bucket (station → the node that runs it).
pub const LEASES_BUCKET: &str = "metro-leases";
/// Outbound ops for the stations a node runs: `metro.rpc.<node>`.
pub const RPC_PREFIX: &str = "metro.rpc.";

/// The subject a node answers outbound ops on.
pub fn rpc_subject(node: &str) -> String {
    format!("{RPC_PREFIX}{}", encode_node(node))
}

/// A node name as one subject token (and consumer name): ASCII letters,
/// digits and `-` stay, every other byte becomes `_` and two hex digits
/// (`_` itself too), so the encoding is reversible and never holds `.`,
/// `*`, `>` or white space.
pub fn encode_node(node: &str) -> String {
    let mut out = String::with_capacity(node.len());
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The inverse of [`encode_node`]; `None` for a token it cannot have made.
pub fn decode_node(token: &str) -> Option<String> {
    let mut out = Vec::with_capacity(token.len());
    let b = token.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The subject a node publishes its events on.
pub fn subject(node: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", encode_node(node))
}

/// The node a subject of the stream names.
pub fn node_of_subject(subject: &str) -> Option<String> {
    decode_node(subject.strip_prefix(SUBJECT_PREFIX)?)
}

/// The durable consumer of a node.
pub fn consumer(node: &str) -> String {
    format!("metrod-{}", encode_node(node))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A line URI as a KV key: base64url without padding (KV keys allow only
/// `[-/_=.a-zA-Z0-9]`).
pub fn line_key(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=n {
            out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The line URI of a KV key; `None` for a key [`line_key`] cannot have made.
pub fn key_line(key: &str) -> Option<String> {
    let mut out = Vec::with_capacity(key.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in key.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip() {
        for n in ["laptop", "dev-box.local", "a_b", "Ünï cödé", "x*>y", ""] {
            let e = encode_node(n);
            assert!(e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(decode_node(&e).as_deref(), Some(n));
        }
        assert_eq!(encode_node("dev-box.local"), "dev-box_2elocal");
        assert_eq!(node_of_subject(&subject("a.b")).as_deref(), Some("a.b"));
        assert_eq!(decode_node("_z1"), None);
    }

    #[test]
    fn line_keys_round_trip() {
        for l in [
            "metro://telegram/-100/42",
            "metro://discord/1/2",
            "a",
            "ab",
            "abc",
            "metro://local/ünï",
        ] {
            let k = line_key(l);
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(key_line(&k).as_deref(), Some(l));
        }
        assert_eq!(line_key("abc"), "YWJj");
        assert_eq!(line_key("ab"), "YWI");
        assert_eq!(key_line("a.b"), None);
    }
}
