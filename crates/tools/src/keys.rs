//! A throwaway APNs auth key: a P-256 key generated in-process, so that neither the
//! demo nor the load tool needs an Apple account.

use std::path::{Path, PathBuf};

use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use secrecy::{ExposeSecret as _, SecretString};

/// Key id the generated key is announced under (Apple's are 10 characters).
pub const KEY_ID: &str = "DEMOKEY123";
/// Team id the provider tokens claim (10 characters, like Apple's).
pub const TEAM_ID: &str = "DEMOTEAM45";
/// The app's bundle id; the stand-in's default topic.
pub const TOPIC: &str = "com.example.app";

/// A generated key pair: the private half for the server, the public half for the stand-in.
pub struct GeneratedKey {
    private_pem: SecretString,
    /// SubjectPublicKeyInfo PEM, what the stand-in verifies provider tokens with.
    pub public_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot encode the generated key: {0}")]
    Encode(String),
    #[error("cannot write the key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl GeneratedKey {
    pub fn generate() -> Result<Self, KeyError> {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let public_pem = key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(Self {
            private_pem: SecretString::from(private_pem.as_str().to_owned()),
            public_pem,
        })
    }

    /// Writes the PKCS#8 PEM as `AuthKey_<KEY_ID>.p8` in `dir` (the name Apple's
    /// downloads carry) and returns its path.
    pub fn write_p8(&self, dir: &Path) -> Result<PathBuf, KeyError> {
        let path = dir.join(format!("AuthKey_{KEY_ID}.p8"));
        std::fs::write(&path, self.private_pem.expose_secret().as_bytes()).map_err(|source| {
            KeyError::Write {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }
}
