//! SCRAM client (RFC 5802, SHA-256/512 per RFC 7677 and KIP-84), without channel binding.

use ring::{digest, hmac, pbkdf2};

/// Kafka refuses SCRAM credentials with fewer iterations (KIP-84); fewer from a server is a downgrade.
const MIN_ITERATIONS: u32 = 4096;
/// Kafka stores SCRAM credentials with at most 16,384 iterations (its `ScramMechanism`), so a
/// server asking for more is not Kafka: refused, so that it cannot make the client spin on
/// PBKDF2 (1,000,000 took 1.5 s per attempt under the fuzzer, seconds on a small board).
const MAX_ITERATIONS: u32 = 16_384;
/// `base64("n,,")`: the GS2 header of a client that does not support channel binding.
const GS2_HEADER_B64: &str = "biws";

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The user name or password is outside the ASCII subset we prepare (RFC 4013 SASLprep).
    #[error(
        "the {0} contains a non-ASCII or control character; SCRAM needs SASLprep, which kedge \
         implements for printable ASCII only"
    )]
    NotAscii(&'static str),
    /// The server's message does not follow RFC 5802.
    #[error("bad SCRAM server message: {0}")]
    Malformed(String),
    /// The server answered with `e=...` (RFC 5802 §7).
    #[error("the server rejected the SCRAM exchange: {0}")]
    Server(String),
    /// The server could not prove it knows the password (mutual authentication failed).
    #[error("the server's SCRAM signature does not match; it does not know the credentials")]
    BadServerSignature,
}

/// The hash a SCRAM mechanism uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// A client-side SCRAM exchange: first message, then final message, then server verification.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce from a CSPRNG.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> Result<Self, ScramError> {
        use rand::Rng;
        // ThreadRng is ChaCha12 seeded from the OS: a CSPRNG, as RFC 5802 §5.1 asks for nonces.
        let bytes: [u8; 24] = rand::rng().random();
        Self::with_nonce(hash, username, password, &base64::encode(&bytes))
    }

    /// Starts an exchange with a given nonce (tests use the RFC's).
    pub fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Result<Self, ScramError> {
        check_credentials(username, password)?;
        // RFC 5802 §5.1: '=' and ',' in the name are escaped as =3D and =2C.
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Ok(ScramClient {
            hash,
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={name},r={nonce}"),
            server_signature: None,
        })
    }

    /// The client-first-message, GS2 header `n,,` included.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server-first-message with the client-final-message (with the proof).
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("server-first-message is not UTF-8".into()))?;
        if let Some(e) = server_first.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_owned()));
        }
        let mut parts = server_first.split(',');
        let nonce = attribute(parts.next(), 'r', "nonce")?;
        let salt = attribute(parts.next(), 's', "salt")?;
        let iterations = attribute(parts.next(), 'i', "iteration count")?;
        // A nonce that does not extend ours could be a replay of another exchange (RFC 5802 §5.1).
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed(
                "the server nonce does not extend the client nonce".into(),
            ));
        }
        if !nonce.chars().all(|c| c.is_ascii_graphic() && c != ',') {
            return Err(ScramError::Malformed(
                "invalid characters in the nonce".into(),
            ));
        }
        let salt = base64::decode(salt)
            .ok_or_else(|| ScramError::Malformed("the salt is not base64".into()))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed(format!("bad iteration count {iterations:?}")))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Malformed(format!(
                "iteration count {iterations} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            )));
        }
        let mut salted = vec![0u8; self.hash.len()];
        pbkdf2::derive(
            self.hash.pbkdf2(),
            std::num::NonZeroU32::new(iterations).expect("checked ≥ MIN_ITERATIONS"),
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), client_key.as_ref());
        let without_proof = format!("c={GS2_HEADER_B64},r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let stored_key = hmac::Key::new(self.hash.hmac(), stored_key.as_ref());
        let client_signature = hmac::sign(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_key = hmac::Key::new(self.hash.hmac(), server_key.as_ref());
        self.server_signature = Some(
            hmac::sign(&server_key, auth_message.as_bytes())
                .as_ref()
                .to_vec(),
        );
        Ok(format!("{without_proof},p={}", base64::encode(&proof)))
    }

    /// Checks the server-final-message: the server must prove it knows the password too.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final-message is not UTF-8".into()))?;
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_owned()));
        }
        let expected = self
            .server_signature
            .as_ref()
            .ok_or_else(|| ScramError::Malformed("server-final before server-first".into()))?;
        let v = attribute(server_final.split(',').next(), 'v', "verifier")?;
        let got = base64::decode(v)
            .ok_or_else(|| ScramError::Malformed("the verifier is not base64".into()))?;
        // Without early exit, so that timing leaks nothing about the expected signature.
        let diff = got
            .iter()
            .zip(expected)
            .fold(got.len() ^ expected.len(), |acc, (a, b)| {
                acc | usize::from(a ^ b)
            });
        if diff == 0 {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

/// Checks that SCRAM can use the credentials as they are (see [`saslprep_ascii`]).
pub fn check_credentials(username: &str, password: &str) -> Result<(), ScramError> {
    saslprep_ascii(username, "user name")?;
    saslprep_ascii(password, "password")
}

/// SASLprep (RFC 4013) of printable ASCII is the identity; everything else is refused.
fn saslprep_ascii(value: &str, what: &'static str) -> Result<(), ScramError> {
    if value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ScramError::NotAscii(what))
    }
}

/// The value of `k=value`, or an error naming what was expected.
fn attribute<'a>(part: Option<&'a str>, key: char, what: &str) -> Result<&'a str, ScramError> {
    part.and_then(|p| p.strip_prefix(key))
        .and_then(|p| p.strip_prefix('='))
        .ok_or_else(|| ScramError::Malformed(format!("expected the {what} ({key}=)")))
}

/// Standard base64 with padding (RFC 4648 §4), as SCRAM uses.
pub(crate) mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Encodes `data`.
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Decodes padded base64; `None` for anything else.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        for (index, chunk) in bytes.chunks(4).enumerate() {
            let last = index == bytes.len() / 4 - 1;
            let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && !last) {
                return None;
            }
            let mut n = 0u32;
            for &c in &chunk[..4 - pad] {
                let v = ALPHABET.iter().position(|&a| a == c)?;
                n = n << 6 | v as u32;
            }
            n <<= 6 * pad as u32;
            let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&decoded[..3 - pad]);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3, the SCRAM-SHA-256 example exchange.
    #[test]
    fn rfc7677_sha256_vector() {
        let mut c =
            ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
                .unwrap();
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            c.client_final(server_first).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            c.verify_server_final(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
    }

    /// The server side of RFC 5802 §3, computed independently of the client code.
    fn server_proof_check(
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth_message: &str,
        proof: &[u8],
    ) -> (bool, Vec<u8>) {
        let mut salted = [0u8; 64];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            std::num::NonZeroU32::new(iterations).unwrap(),
            salt,
            password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hmac::HMAC_SHA512, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA512, client_key.as_ref());
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        // The server recovers ClientKey from the proof and checks H(ClientKey) == StoredKey.
        let recovered: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let ok = digest::digest(&digest::SHA512, &recovered).as_ref() == stored_key.as_ref();
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        (ok, server_signature.as_ref().to_vec())
    }

    #[test]
    fn sha512_round_trip() {
        let salt = b"0123456789abcdef";
        let server_first = format!("r=cnonce-snonce,s={},i=4096", base64::encode(salt));
        for (client_password, server_password, accepted) in [
            ("s3cret pw", "s3cret pw", true),
            ("wrong", "s3cret pw", false),
        ] {
            let mut c =
                ScramClient::with_nonce(ScramHash::Sha512, "al=i,ce", client_password, "cnonce")
                    .unwrap();
            assert_eq!(c.client_first(), "n,,n=al=3Di=2Cce,r=cnonce");
            let client_final = c.client_final(server_first.as_bytes()).unwrap();
            let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
            let auth = format!("n=al=3Di=2Cce,r=cnonce,{server_first},{without_proof}");
            let (ok, server_signature) = server_proof_check(
                server_password,
                salt,
                4096,
                &auth,
                &base64::decode(proof).unwrap(),
            );
            assert_eq!(ok, accepted);
            let verdict = c
                .verify_server_final(format!("v={}", base64::encode(&server_signature)).as_bytes());
            assert_eq!(verdict.is_ok(), accepted);
        }
    }

    #[test]
    fn bad_server_messages_are_errors() {
        let client = || ScramClient::with_nonce(ScramHash::Sha256, "u", "p", "abc").unwrap();
        for bad in [
            &b""[..],
            b"garbage",
            b"r=abc",
            b"r=xyzabc123,s=AAAA,i=4096",
            b"r=abc,s=AAAA,i=4096",
            b"r=abc123,s=not base64!,i=4096",
            b"r=abc123,s=AAAA,i=many",
            b"r=abc123,s=AAAA,i=1",
            b"r=abc123,s=AAAA,i=4294967295",
            b"r=abc123,s=AAAA,i=16385",
            b"r=abc123,s=AAAA,i=1000000",
            b"r=abc123,i=4096,s=AAAA",
            b"\xff\xfe",
            b"e=other-error",
        ] {
            assert!(client().client_final(bad).is_err(), "{bad:?}");
        }
        let mut c = client();
        c.client_final(b"r=abc123,s=AAAA,i=4096").unwrap();
        for bad in [&b""[..], b"v=", b"v=%%%%", b"x=AAAA", b"e=invalid-proof"] {
            assert!(c.verify_server_final(bad).is_err(), "{bad:?}");
        }
        assert!(client().verify_server_final(b"v=AAAA").is_err());
    }

    #[test]
    fn non_ascii_credentials_are_refused() {
        assert_eq!(
            ScramClient::new(ScramHash::Sha256, "jörg", "pw").err(),
            Some(ScramError::NotAscii("user name"))
        );
        assert_eq!(
            ScramClient::new(ScramHash::Sha256, "u", "p\tw").err(),
            Some(ScramError::NotAscii("password"))
        );
    }

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64::decode(&base64::encode(data)).unwrap(), data);
        }
        assert_eq!(base64::encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64::encode(b"fo"), "Zm8=");
        for bad in ["Zm8", "Zm=8", "Z===", "Zm8=Zm8=", "Zm9v!A=="] {
            assert!(base64::decode(bad).is_none(), "{bad}");
        }
    }
}
