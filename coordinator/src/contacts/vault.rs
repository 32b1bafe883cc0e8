//! Phone numbers at rest: AES-256-GCM ciphertext plus an HMAC-SHA-256 blind index.
//!
//! One 32-byte master key lives in a key file (hex, mode 0600, created on first start).
//! Two keys are derived from it with HKDF-SHA-256 under distinct labels: one encrypts, one
//! computes the blind index. The index is deterministic, so the database can look a number
//! up and refuse duplicates without ever holding it in clear; the ciphertext carries a
//! random 96-bit nonce, so equal numbers encrypt differently.

use callgate_common::phone::PhoneNumber;
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use std::path::{Path, PathBuf};

/// Why the number vault could not be opened or a number not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The key file could not be read or created.
    #[error("contact number key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("contact number key file {path} must hold 64 hex digits (a 256-bit key)")]
    BadKey { path: PathBuf },
    /// A stored ciphertext failed authentication (wrong key or tampered row).
    #[error("a stored phone number failed to decrypt (wrong key file or altered data)")]
    Decrypt,
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
}

/// The keys for numbers at rest.
#[derive(Clone)]
pub struct NumberVault {
    seal: std::sync::Arc<LessSafeKey>,
    index: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for NumberVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NumberVault(..)")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl NumberVault {
    /// Loads the key file at `path`, creating it with a fresh random key when missing.
    pub fn open_or_create(path: &Path) -> Result<NumberVault, VaultError> {
        let io = |source| VaultError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| VaultError::Random)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            write_private(path, &hex::encode(key)).map_err(io)?;
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let key = hex::decode(text.trim())
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| VaultError::BadKey {
                path: path.to_path_buf(),
            })?;
        Ok(NumberVault::from_master_key(&key))
    }

    /// A vault over `master` (for tests and tools that hold the key already).
    pub fn from_master_key(master: &[u8; 32]) -> NumberVault {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"callgate contact numbers").extract(master);
        let derive = |label: &'static [u8]| {
            let mut out = [0u8; 32];
            prk.expand(&[label], Len(32))
                .and_then(|okm| okm.fill(&mut out))
                .expect("HKDF-SHA-256 can expand 32 bytes");
            out
        };
        let seal = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &derive(b"aes-256-gcm"))
                .expect("32 bytes is an AES-256 key"),
        );
        let index = hmac::Key::new(hmac::HMAC_SHA256, &derive(b"blind-index"));
        NumberVault {
            seal: std::sync::Arc::new(seal),
            index,
            rng: SystemRandom::new(),
        }
    }

    /// The blind index of a number: the same for the same number, useless without the key.
    pub fn blind_index(&self, number: &PhoneNumber) -> Vec<u8> {
        hmac::sign(&self.index, number.e164().as_bytes())
            .as_ref()
            .to_vec()
    }

    /// `nonce || ciphertext || tag` of the number's E.164 form.
    pub fn seal(&self, number: &PhoneNumber) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| VaultError::Random)?;
        let mut buf = number.e164().into_bytes();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(b"e164"),
                &mut buf,
            )
            .map_err(|_| VaultError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// A sealer for many numbers in a row (an import's parser): it draws nonces from the
    /// system random source [`Sealer::NONCES_PER_DRAW`] at a time instead of one system
    /// call per number; each nonce is still used once.
    pub fn sealer(&self) -> Sealer {
        Sealer {
            vault: self.clone(),
            nonces: Vec::new(),
            next: 0,
        }
    }

    /// The blind index and the sealed form of one number, its E.164 text built once.
    fn index_and_seal(
        &self,
        number: &PhoneNumber,
        nonce: [u8; NONCE_LEN],
    ) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let e164 = number.e164();
        let index = hmac::sign(&self.index, e164.as_bytes()).as_ref().to_vec();
        let mut out = Vec::with_capacity(NONCE_LEN + e164.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(e164.as_bytes());
        let tag = self
            .seal
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(b"e164"),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| VaultError::Random)?;
        out.extend_from_slice(tag.as_ref());
        Ok((index, out))
    }

    /// Decrypts what [`NumberVault::seal`] produced.
    pub fn open(&self, sealed: &[u8]) -> Result<PhoneNumber, VaultError> {
        if sealed.len() < NONCE_LEN {
            return Err(VaultError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Decrypt)?;
        let mut buf = body.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, aead::Aad::from(b"e164"), &mut buf)
            .map_err(|_| VaultError::Decrypt)?;
        let text = std::str::from_utf8(plain).map_err(|_| VaultError::Decrypt)?;
        PhoneNumber::parse(text, None).map_err(|_| VaultError::Decrypt)
    }
}

/// Seals numbers one after another with nonces drawn in bulk; see [`NumberVault::sealer`].
pub struct Sealer {
    vault: NumberVault,
    nonces: Vec<u8>,
    next: usize,
}

impl Sealer {
    /// Nonces fetched per call to the system random source.
    pub const NONCES_PER_DRAW: usize = 256;

    /// The number's blind index and its sealed form (as [`NumberVault::blind_index`] and
    /// [`NumberVault::seal`] give them).
    pub fn index_and_seal(
        &mut self,
        number: &PhoneNumber,
    ) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        if self.next == self.nonces.len() {
            self.nonces.resize(Self::NONCES_PER_DRAW * NONCE_LEN, 0);
            self.vault
                .rng
                .fill(&mut self.nonces)
                .map_err(|_| VaultError::Random)?;
            self.next = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.nonces[self.next..self.next + NONCE_LEN]);
        self.next += NONCE_LEN;
        self.vault.index_and_seal(number, nonce)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, None).unwrap()
    }

    #[test]
    fn sealed_numbers_round_trip_and_never_contain_the_digits() {
        let v = NumberVault::from_master_key(&[7; 32]);
        let num = n("+14155550134");
        let a = v.seal(&num).unwrap();
        let b = v.seal(&num).unwrap();
        assert_ne!(a, b, "random nonce: equal numbers encrypt differently");
        assert!(!a.windows(10).any(|w| w == b"4155550134"));
        assert_eq!(v.open(&a).unwrap().e164(), "+14155550134");
    }

    #[test]
    fn the_blind_index_is_stable_per_key_and_differs_across_keys() {
        let v1 = NumberVault::from_master_key(&[1; 32]);
        let v2 = NumberVault::from_master_key(&[2; 32]);
        let num = n("+442079460958");
        assert_eq!(v1.blind_index(&num), v1.blind_index(&num));
        assert_ne!(v1.blind_index(&num), v2.blind_index(&num));
        assert_ne!(v1.blind_index(&num), v1.blind_index(&n("+442079460959")));
    }

    #[test]
    fn a_sealer_gives_what_seal_and_blind_index_give_with_a_fresh_nonce_each_time() {
        let v = NumberVault::from_master_key(&[7; 32]);
        let num = n("+14155550134");
        let mut sealer = v.sealer();
        let mut nonces = std::collections::HashSet::new();
        // Past one draw of nonces, so a refill is exercised too.
        for _ in 0..Sealer::NONCES_PER_DRAW + 3 {
            let (index, sealed) = sealer.index_and_seal(&num).unwrap();
            assert_eq!(index, v.blind_index(&num));
            assert_eq!(v.open(&sealed).unwrap().e164(), "+14155550134");
            assert_eq!(sealed.len(), v.seal(&num).unwrap().len());
            assert!(
                nonces.insert(sealed[..NONCE_LEN].to_vec()),
                "a nonce was reused"
            );
        }
    }

    #[test]
    fn a_tampered_row_or_wrong_key_is_refused() {
        let v = NumberVault::from_master_key(&[3; 32]);
        let mut sealed = v.seal(&n("+33142685300")).unwrap();
        assert!(NumberVault::from_master_key(&[4; 32])
            .open(&sealed)
            .is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(v.open(&sealed), Err(VaultError::Decrypt)));
        assert!(v.open(&[1, 2, 3]).is_err());
    }

    #[test]
    fn the_key_file_is_created_once_then_reused_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/number.key");
        let v = NumberVault::open_or_create(&path).unwrap();
        let sealed = v.seal(&n("+4930901820")).unwrap();
        let again = NumberVault::open_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap().e164(), "+4930901820");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        let err = NumberVault::open_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("number.key") && err.contains("64 hex"),
            "{err}"
        );
    }
}
