//! The syntax of config values that other parts use too: the paths the
//! health server always serves, a webhook secret's signing key, a MySQL
//! GTID set. Here, at the bottom, so that checking a config needs nothing
//! from the parts that run it.

use base64::Engine as _;

/// Paths the health server always serves besides `server.path`.
pub(crate) const SERVER_FIXED_PATHS: [&str; 3] = ["/live", "/ready", "/metrics"];

/// Why a webhook secret gives no signing key. The messages never show the
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `whsec_` followed by something that is not base64.
    #[error("a `whsec_` secret must be followed by base64")]
    NotBase64,
    /// No key bytes (an empty string, or `whsec_` alone).
    #[error("the secret is empty")]
    Empty,
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`,
/// or a plain string's own bytes.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => {
            let b64 = b64.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .map_err(|_| SecretError::NotBase64)?
        }
        None => secret.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(key)
}

/// Parses a MySQL GTID set (`uuid:1-100:200,uuid2[:tag]:1-5`, whitespace
/// allowed) into the form the binlog dump request takes.
pub(crate) fn parse_mysql_gtid_set(
    set: &str,
) -> Result<Vec<mysql_common::packets::Sid<'static>>, String> {
    set.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<mysql_common::packets::Sid<'static>>()
                .map_err(|e| format!("`{p}` is not a MySQL GTID set entry (uuid:1-100): {e}"))
        })
        .collect()
}
