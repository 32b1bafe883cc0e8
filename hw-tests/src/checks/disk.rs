//! The data disk: enough free space, and 1 MiB written, synced, read back intact.

use crate::report::Outcome;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Checks free space and a write/sync/read-back round trip in `data_dir`.
pub fn check(data_dir: &Path, min_free_bytes: u64) -> Outcome {
    let stat = match rustix::fs::statvfs(data_dir) {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("statvfs {}: {e}", data_dir.display())),
    };
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < min_free_bytes {
        return Outcome::Fail(format!(
            "{} MiB free on {}, need {} MiB",
            free >> 20,
            data_dir.display(),
            min_free_bytes >> 20
        ));
    }
    let path = data_dir.join(format!(".callgate-hwtest-{}", std::process::id()));
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let written = Sha256::digest(&data);
    let result = (|| -> std::io::Result<bool> {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        Ok(Sha256::digest(std::fs::read(&path)?) == written)
    })();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(true) => Outcome::Pass(format!(
            "{} MiB free; 1 MiB written, synced and read back intact",
            free >> 20
        )),
        Ok(false) => Outcome::Fail("data read back differs from data written".into()),
        Err(e) => Outcome::Fail(format!("write/read test in {}: {e}", data_dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_on_a_writable_directory_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(check(dir.path(), 1), Outcome::Pass(_)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn fails_when_free_space_is_below_the_minimum_or_the_dir_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(check(dir.path(), u64::MAX), Outcome::Fail(m) if m.contains("free")));
        assert!(matches!(
            check(Path::new("/no/such/dir"), 1),
            Outcome::Fail(_)
        ));
    }
}
