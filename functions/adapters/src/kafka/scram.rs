//! The client side of SASL/SCRAM (RFC 5802) with SHA-256 and SHA-512
//! (RFC 7677), as Kafka's SCRAM-SHA-256 and SCRAM-SHA-512 mechanisms speak
//! it: no channel binding, no extensions. Pure: the caller carries the
//! three messages to the broker and back.
//!
//! Every server message is untrusted input: it is parsed without panicking,
//! the server nonce must extend ours, the iteration count must lie in
//! Kafka's range, and the server's final signature is checked, so a broker
//! that does not know the password cannot pass for one that does.

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::redacted::Redacted;

/// The fewest PBKDF2 iterations accepted (Kafka's own minimum, RFC 7677's advice).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most accepted: a hostile server must not make the client spin.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// Why a SCRAM exchange failed. The texts never hold the password or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The server's message could not be read.
    #[error("the broker's SCRAM message is malformed: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend the client's.
    #[error("the broker's SCRAM nonce does not extend Ferry's (a replayed or forged exchange)")]
    Nonce,
    /// The iteration count is out of range.
    #[error("the broker asks for {0} PBKDF2 iterations; Ferry accepts {MIN_ITERATIONS} to {MAX_ITERATIONS}")]
    Iterations(u64),
    /// The server said no, with its reason.
    #[error("the broker refused the SCRAM proof: {0}")]
    Refused(String),
    /// The server could not prove it knows the password.
    #[error("the broker's SCRAM signature is wrong: it does not hold this user's credential")]
    ServerSignature,
    /// Messages were exchanged out of order.
    #[error("SCRAM messages out of order")]
    OutOfOrder,
}

/// One SCRAM exchange, client side.
pub struct ScramClient {
    hash: ScramHash,
    password: Redacted,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// An exchange for `username` with a fresh random nonce.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> Self {
        let mut nonce = [0u8; 24];
        // A failing system RNG leaves zeros; the nonce then only loses its
        // freshness, which the server's own nonce half still provides.
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        Self::with_nonce(hash, username, password, &B64.encode(nonce))
    }

    /// An exchange with a chosen nonce (printable, no comma): for tests.
    pub fn with_nonce(hash: ScramHash, username: &str, password: &str, nonce: &str) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            hash,
            password: Redacted::new(password),
            client_nonce: nonce.to_owned(),
            client_first_bare: format!("n={name},r={nonce}"),
            server_signature: None,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message, answering the server-first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("m", _)) => return Err(ScramError::Malformed("it requires an extension")),
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|_| ScramError::Malformed("the salt is not base64"))?),
                Some(("i", v)) => {
                    iterations = Some(
                        v.parse::<u64>()
                            .map_err(|_| ScramError::Malformed("the iteration count is not a number"))?,
                    )
                }
                Some(("e", v)) => return Err(ScramError::Refused(printable(v))),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        let salt = salt.ok_or(ScramError::Malformed("no salt"))?;
        let iterations = iterations.ok_or(ScramError::Malformed("no iteration count"))?;
        if !nonce.starts_with(&self.client_nonce)
            || nonce.len() == self.client_nonce.len()
            || !nonce.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(ScramError::Nonce);
        }
        let rounds = u32::try_from(iterations)
            .ok()
            .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
            .and_then(std::num::NonZeroU32::new)
            .ok_or(ScramError::Iterations(iterations))?;

        let h = self.hash;
        let mut salted = vec![0u8; h.len()];
        pbkdf2::derive(h.pbkdf2(), rounds, &salt, self.password.expose().as_bytes(), &mut salted);
        let salted_key = hmac::Key::new(h.hmac(), &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(h.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(&hmac::Key::new(h.hmac(), stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        let server_signature = hmac::sign(&hmac::Key::new(h.hmac(), server_key.as_ref()), auth_message.as_bytes());
        self.server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Check the server-final message: the server proves it knew the
    /// credential, or says why it refused.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let expected = self.server_signature.as_deref().ok_or(ScramError::OutOfOrder)?;
        let server_final = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let first = server_final.split(',').next().unwrap_or_default();
        match first.split_once('=') {
            Some(("e", why)) => Err(ScramError::Refused(printable(why))),
            Some(("v", sig)) => {
                let sig = B64.decode(sig).map_err(|_| ScramError::Malformed("the signature is not base64"))?;
                constant_time::verify_slices_are_equal(&sig, expected).map_err(|_| ScramError::ServerSignature)
            }
            _ => Err(ScramError::Malformed("neither a signature nor an error")),
        }
    }
}

/// A server-given text, bounded and printable, for an error message.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 7677 section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn rfc7677_example() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = c.client_final(server_first).expect("client final");
        assert_eq!(
            String::from_utf8(fin).expect("utf8"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
        assert_eq!(
            c.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(
            c.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::Refused("invalid-proof".into()))
        );
    }

    #[test]
    fn names_are_escaped_and_bad_server_messages_refused() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha512, "a=b,c", "pw", "abc");
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=abc");
        let cases: [(&[u8], ScramError); 6] = [
            (b"r=xyz1,s=AAAA,i=4096", ScramError::Nonce),
            (b"r=abc,s=AAAA,i=4096", ScramError::Nonce),
            (b"r=abcd,s=AAAA,i=1", ScramError::Iterations(1)),
            (b"r=abcd,s=AAAA,i=99999999999", ScramError::Iterations(99_999_999_999)),
            (b"m=ext,r=abcd,s=AAAA,i=4096", ScramError::Malformed("it requires an extension")),
            (b"r=abcd,s=!!,i=4096", ScramError::Malformed("the salt is not base64")),
        ];
        for (msg, want) in cases {
            assert_eq!(c.client_final(msg), Err(want), "{}", String::from_utf8_lossy(msg));
        }
        assert_eq!(
            ScramClient::with_nonce(ScramHash::Sha256, "u", "p", "n").verify_server_final(b"v=AA=="),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let c = ScramClient::new(ScramHash::Sha256, "user", "hunter2-secret");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    proptest! {
        /// Whatever a broker sends, the client answers or errs; it never panics.
        #[test]
        fn hostile_server_messages_never_panic(first in proptest::collection::vec(any::<u8>(), 0..200),
                                               last in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut c = ScramClient::with_nonce(ScramHash::Sha256, "u", "p", "n");
            let _ = c.client_final(&first);
            let _ = c.verify_server_final(&last);
        }

        /// Well-formed server-first messages with a range of fields.
        #[test]
        fn structured_server_messages_never_panic(suffix in "[!-+--~]{0,20}", salt in "[A-Za-z0-9+/=]{0,12}", i in any::<u64>()) {
            let mut c = ScramClient::with_nonce(ScramHash::Sha512, "u", "p", "n");
            let msg = format!("r=n{suffix},s={salt},i={}", i % 5000);
            let _ = c.client_final(msg.as_bytes());
        }
    }
}
