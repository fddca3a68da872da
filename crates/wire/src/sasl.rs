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
use super::scram::{self, ScramClient, ScramError, ScramHash};

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
    // Some brokers (tansu 0.6) hang up on a mechanism they lack instead of answering with
    // UNSUPPORTED_SASL_MECHANISM; say which step it was.
    let r = conn.call(&request, handshake, timeout).await.map_err(|e| {
        fail(format!(
            "SaslHandshake for {} failed (does the broker offer it?): {e}",
            sasl.mechanism.name()
        ))
    })?;
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
        let r = conn
            .call(&request, authenticate, timeout)
            .await
            .map_err(|e| fail(format!("SaslAuthenticate failed: {e}")))?;
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
    // A broker with connections.max.reauth.ms (KIP-368) closes the connection when the session
    // lifetime ends; the next request reconnects and authenticates again.
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
    scram::check_credentials(&sasl.username, &sasl.password).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BufMut, BytesMut};
    use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
    use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
    use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use ring::{digest, hmac, pbkdf2};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::super::scram::base64;
    use super::*;

    const SALT: &[u8] = b"kedge-test-salt!";
    const ITERATIONS: u32 = 4096;

    /// How the scripted broker behaves.
    #[derive(Clone, Copy)]
    struct Broker {
        /// The mechanism it enables.
        enabled: Mechanism,
        /// The password it knows for user "edge".
        password: &'static str,
        /// Whether it sends a wrong server signature (an impostor that does not know it).
        forge_signature: bool,
    }

    /// SCRAM-SHA-512 server side (RFC 5802 §3): checks the proof, returns ServerSignature.
    fn server_check(password: &str, auth_message: &str, proof: &[u8]) -> Option<Vec<u8>> {
        let mut salted = [0u8; 64];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            std::num::NonZeroU32::new(ITERATIONS).unwrap(),
            SALT,
            password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hmac::HMAC_SHA512, &salted);
        let stored = digest::digest(&digest::SHA512, hmac::sign(&salted, b"Client Key").as_ref());
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, stored.as_ref()),
            auth_message.as_bytes(),
        );
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        if digest::digest(&digest::SHA512, &client_key).as_ref() != stored.as_ref() {
            return None;
        }
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        Some(server_signature.as_ref().to_vec())
    }

    /// Serves SaslHandshake and SaslAuthenticate frames until the client hangs up.
    async fn serve(mut stream: DuplexStream, broker: Broker) {
        let mut first_bare = String::new();
        let mut server_first = String::new();
        loop {
            let Ok(len) = stream.read_i32().await else {
                return;
            };
            let mut frame = vec![0u8; len as usize];
            stream.read_exact(&mut frame).await.unwrap();
            let mut frame = bytes::Bytes::from(frame);
            let (key, version) = (frame.clone().get_i16(), {
                let mut f = frame.clone();
                f.advance(2);
                f.get_i16()
            });
            let api = ApiKey::try_from(key).unwrap();
            let header =
                RequestHeader::decode(&mut frame, api.request_header_version(version)).unwrap();
            let mut body = BytesMut::new();
            match api {
                ApiKey::SaslHandshake => {
                    let r = SaslHandshakeRequest::decode(&mut frame, version).unwrap();
                    let code = if r.mechanism.as_str() == broker.enabled.name() {
                        0
                    } else {
                        33
                    };
                    SaslHandshakeResponse::default()
                        .with_error_code(code)
                        .with_mechanisms(vec![StrBytes::from_static_str(broker.enabled.name())])
                        .encode(&mut body, version)
                        .unwrap();
                }
                ApiKey::SaslAuthenticate => {
                    let r = SaslAuthenticateRequest::decode(&mut frame, version).unwrap();
                    let token = String::from_utf8(r.auth_bytes.to_vec()).unwrap();
                    let (code, message, reply) = if broker.enabled == Mechanism::Plain {
                        if token == format!("\0edge\0{}", broker.password) {
                            (0, None, String::new())
                        } else {
                            (58, Some("Invalid username or password"), String::new())
                        }
                    } else if let Some(bare) = token.strip_prefix("n,,") {
                        first_bare = bare.to_owned();
                        let nonce = bare.split(",r=").nth(1).unwrap();
                        server_first = format!(
                            "r={nonce}server-part,s={},i={ITERATIONS}",
                            base64::encode(SALT)
                        );
                        (0, None, server_first.clone())
                    } else {
                        let (without_proof, proof) = token.rsplit_once(",p=").unwrap();
                        let auth = format!("{first_bare},{server_first},{without_proof}");
                        match server_check(broker.password, &auth, &base64::decode(proof).unwrap())
                        {
                            Some(mut signature) => {
                                if broker.forge_signature {
                                    signature[0] ^= 1;
                                }
                                (0, None, format!("v={}", base64::encode(&signature)))
                            }
                            None => (
                                58,
                                Some(
                                    "Authentication failed during authentication due to invalid \
                                     credentials with SASL mechanism SCRAM-SHA-512",
                                ),
                                String::new(),
                            ),
                        }
                    };
                    SaslAuthenticateResponse::default()
                        .with_error_code(code)
                        .with_error_message(message.map(StrBytes::from_static_str))
                        .with_auth_bytes(Bytes::from(reply))
                        .encode(&mut body, version)
                        .unwrap();
                }
                other => panic!("unexpected request {other:?}"),
            }
            let mut head = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut head, api.response_header_version(version))
                .unwrap();
            let mut out = BytesMut::new();
            out.put_i32((head.len() + body.len()) as i32);
            out.extend_from_slice(&head);
            out.extend_from_slice(&body);
            stream.write_all(&out).await.unwrap();
        }
    }

    /// Authenticates as "edge" with `password` over `mechanism` against `broker`.
    async fn login(mechanism: Mechanism, password: &str, broker: Broker) -> Result<(), KafkaError> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(server, broker));
        let conn = Connection::over("broker:9093", "kedge-test", Box::new(client));
        let sasl = SaslSettings {
            mechanism,
            username: "edge".into(),
            password: password.into(),
        };
        authenticate(&conn, &sasl, Some(1), Some(2), Duration::from_secs(5)).await
    }

    const SCRAM: Broker = Broker {
        enabled: Mechanism::ScramSha512,
        password: "s3cret",
        forge_signature: false,
    };

    #[tokio::test]
    async fn scram_sha512_exchange_with_a_broker() {
        login(Mechanism::ScramSha512, "s3cret", SCRAM)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn wrong_password_names_user_broker_and_the_brokers_message() {
        let e = login(Mechanism::ScramSha512, "wrong", SCRAM)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "authentication failed for user \"edge\" at Kafka broker broker:9093: \
             SASL_AUTHENTICATION_FAILED: Authentication failed during authentication due to \
             invalid credentials with SASL mechanism SCRAM-SHA-512"
        );
    }

    #[tokio::test]
    async fn a_broker_that_cannot_prove_the_password_is_refused() {
        let impostor = Broker {
            forge_signature: true,
            ..SCRAM
        };
        let e = login(Mechanism::ScramSha512, "s3cret", impostor)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("signature does not match"), "{e}");
    }

    #[tokio::test]
    async fn unsupported_mechanism_lists_the_brokers() {
        let e = login(Mechanism::ScramSha256, "s3cret", SCRAM)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "authentication failed for user \"edge\" at Kafka broker broker:9093: SaslHandshake \
             for SCRAM-SHA-256 answered UNSUPPORTED_SASL_MECHANISM; the broker offers [SCRAM-SHA-512]"
        );
    }

    #[tokio::test]
    async fn plain_sends_rfc4616_token() {
        let plain = Broker {
            enabled: Mechanism::Plain,
            password: "pw",
            forge_signature: false,
        };
        login(Mechanism::Plain, "pw", plain).await.unwrap();
        let e = login(Mechanism::Plain, "nope", plain).await.unwrap_err();
        assert!(
            e.to_string().contains("Invalid username or password"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn brokers_without_sasl_authenticate_are_refused() {
        let (client, _server) = tokio::io::duplex(1024);
        let conn = Connection::over("old:9092", "kedge-test", Box::new(client));
        let sasl = SaslSettings {
            mechanism: Mechanism::Plain,
            username: "edge".into(),
            password: "pw".into(),
        };
        let e = authenticate(&conn, &sasl, Some(1), None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, KafkaError::Auth { .. }), "{e}");
    }

    #[test]
    fn debug_hides_the_password() {
        let sasl = SaslSettings {
            mechanism: Mechanism::Plain,
            username: "edge".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{sasl:?}").contains("hunter2"));
    }
}
