//! The network link: at least one interface other than loopback is up with carrier.

use crate::report::Outcome;
use std::path::Path;

/// Reads `<sysfs>/<iface>/operstate` and `carrier` for every interface.
pub fn check(sysfs_net: &Path) -> Outcome {
    let entries = match std::fs::read_dir(sysfs_net) {
        Ok(e) => e,
        Err(e) => return Outcome::Fail(format!("cannot list {}: {e}", sysfs_net.display())),
    };
    let mut up = Vec::new();
    let mut down = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(entry.path().join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        if read("operstate") == "up" && read("carrier") == "1" {
            up.push(name);
        } else {
            down.push(name);
        }
    }
    up.sort();
    down.sort();
    if up.is_empty() {
        Outcome::Fail(format!(
            "no interface is up with carrier (down: {})",
            down.join(", ")
        ))
    } else {
        Outcome::Pass(format!("link up on {}", up.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(root: &Path, name: &str, state: &str, carrier: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("operstate"), format!("{state}\n")).unwrap();
        std::fs::write(d.join("carrier"), format!("{carrier}\n")).unwrap();
    }

    #[test]
    fn passes_with_one_link_up_and_ignores_loopback() {
        let dir = tempfile::tempdir().unwrap();
        iface(dir.path(), "lo", "unknown", "1");
        iface(dir.path(), "eth0", "up", "1");
        iface(dir.path(), "eth1", "down", "0");
        assert_eq!(check(dir.path()), Outcome::Pass("link up on eth0".into()));
    }

    #[test]
    fn fails_when_only_loopback_or_no_carrier() {
        let dir = tempfile::tempdir().unwrap();
        iface(dir.path(), "lo", "unknown", "1");
        iface(dir.path(), "eth0", "up", "0");
        assert!(matches!(check(dir.path()), Outcome::Fail(m) if m.contains("eth0")));
    }
}
