//! SASL authentication of a fresh connection (KIP-43 handshake, KIP-152 SaslAuthenticate):
//! PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, RFC 7677, KIP-84).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use kafka_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use kafka_protocol::protocol::StrBytes;

use super::KafkaError;
use super::connection::Connection;
use super::errors::error_name;
use super::scram::{ScramClient, ScramError, ScramHash};

/// A SASL mechanism kedge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN: the password in the clear (use it only over TLS).
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// The IANA name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Credentials for SASL; `Debug` hides the password.
#[derive(Clone)]
pub struct SaslSettings {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// User name.
    pub username: String,
    /// Password, resolved from the config's secret.
    pub password: String,
}

impl fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Authenticates `conn`, whose ApiVersions gave `handshake` and `authenticate` versions.
pub async fn authenticate(
    conn: &Connection,
    sasl: &SaslSettings,
    handshake: Option<i16>,
    authenticate: Option<i16>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let fail = |reason: String| KafkaError::Auth {
        addr: conn.addr().to_owned(),
        user: sasl.username.clone(),
        reason,
    };
    // Handshake v1 (KIP-152) frames the tokens in SaslAuthenticate; v0's raw tokens are pre-1.0.
    let (Some(handshake), Some(authenticate)) = (handshake, authenticate) else {
        return Err(fail(
            "the broker does not support SaslHandshake v1 and SaslAuthenticate (Kafka ≥ 1.0)"
                .into(),
        ));
    };
    let request = SaslHandshakeRequest::default()
        .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
    let r = conn.call(&request, handshake, timeout).await?;
    if r.error_code != 0 {
        let offered: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(fail(format!(
            "SaslHandshake for {} answered {}; the broker offers [{}]",
            sasl.mechanism.name(),
            error_name(r.error_code),
            offered.join(", ")
        )));
    }
    let step = |token: Vec<u8>| async move {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let r = conn.call(&request, authenticate, timeout).await?;
        if r.error_code != 0 {
            let message = r.error_message.as_ref().map_or("", |m| m.as_str());
            return Err(fail(format!("{}: {message}", error_name(r.error_code))));
        }
        Ok(r.auth_bytes)
    };
    match sasl.mechanism {
        Mechanism::Plain => {
            // RFC 4616 §2: authzid NUL authcid NUL passwd, with an empty authzid.
            let token = format!("\0{}\0{}", sasl.username, sasl.password);
            step(token.into_bytes()).await?;
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let hash = if sasl.mechanism == Mechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let scram = |e: ScramError| fail(e.to_string());
            let mut client =
                ScramClient::new(hash, &sasl.username, &sasl.password).map_err(scram)?;
            let server_first = step(client.client_first().into_bytes()).await?;
            let client_final = client.client_final(&server_first).map_err(scram)?;
            let server_final = step(client_final.into_bytes()).await?;
            client.verify_server_final(&server_final).map_err(scram)?;
        }
    }
    Ok(())
}

/// Checks credentials before any connection: PLAIN forbids NUL (RFC 4616), SCRAM needs ASCII.
pub fn check_credentials(sasl: &SaslSettings) -> Result<(), String> {
    if sasl.mechanism == Mechanism::Plain {
        if sasl.username.contains('\0') || sasl.password.contains('\0') {
            return Err("PLAIN credentials must not contain NUL characters".into());
        }
        return Ok(());
    }
    ScramClient::new(ScramHash::Sha256, &sasl.username, &sasl.password)
        .map(drop)
        .map_err(|e| e.to_string())
}
