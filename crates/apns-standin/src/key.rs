//! A throwaway token-auth key, so a test needs no Apple account: the private half for
//! the client under test, the public half for the stand-in to verify its JWTs with.

use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

/// A fresh P-256 key, as Apple issues them for token auth.
pub struct AuthKey {
    /// PKCS#8 PEM: what a `.p8` file downloaded from Apple holds.
    pub private_pem: String,
    /// SubjectPublicKeyInfo PEM, for [`StandInConfig::new`](crate::StandInConfig::new).
    pub public_pem: String,
}

impl AuthKey {
    pub fn generate() -> anyhow::Result<Self> {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("cannot encode the generated key: {e}"))?
            .to_string();
        let public_pem = key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("cannot encode the generated key: {e}"))?;
        Ok(Self {
            private_pem,
            public_pem,
        })
    }
}
