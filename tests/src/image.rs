//! The appliance's OS image under QEMU: builds it with `images/build` (cached under the
//! target dir, keyed on a hash of the daemon binary and everything in `images/`), reads files
//! out of its ext4 root file system with `debugfs` (no mount), and boots a copy of its
//! bootable disk (`disk.img`: GPT, EFI system partition with systemd-boot, root partition)
//! with `qemu-system-x86_64` and OVMF's UEFI firmware, the serial console written to a file
//! the test reads.
//!
//! [`Vm`] powers the guest off (ACPI, through the QEMU monitor) when asked and kills QEMU
//! when dropped, so no test leaves a VM running, whatever path it ends on.
//!
//! Acceleration: `CALLGATE_QEMU_ACCEL=kvm|tcg|auto` (default `auto`: KVM when `/dev/kvm`
//! opens read-write and the CPU shows `vmx` or `svm`, else TCG). TCG is the software emulator:
//! slower, but it runs everywhere, so CI without KVM runs the same test.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo target dir of the running test (`target/<profile>/deps/<test>` → `target`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    exe.ancestors()
        .nth(3)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// An image `images/build` made: `rootfs.ext4`, `vmlinuz`, `initrd.img`, `cmdline`.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The output directory.
    pub dir: PathBuf,
}

impl BuiltImage {
    /// The ext4 root file system.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }

    /// The bootable disk.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// Where the root partition starts in `disk.img`, in MiB.
    pub fn root_offset_mib(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("root-offset-mib"))
            .expect("the image has a root-offset-mib file")
            .trim()
            .parse()
            .expect("root-offset-mib is a number")
    }

    /// The kernel command line the build wrote.
    pub fn cmdline(&self) -> String {
        std::fs::read_to_string(self.dir.join("cmdline"))
            .expect("the image has a cmdline file")
            .trim()
            .to_string()
    }
}

/// SHA-256 (hex) over the daemon binary and every file under `images/` (path, mode,
/// contents, in path order): the image cache's key.
pub fn image_key(binary: &Path) -> String {
    let mut h = Sha256::new();
    h.update(std::fs::read(binary).expect("reading the daemon binary"));
    let images = workspace_root().join("images");
    let mut files = Vec::new();
    collect_files(&images, &mut files);
    files.sort();
    for f in files {
        let rel = f.strip_prefix(&images).expect("under images/");
        let meta = std::fs::symlink_metadata(&f).expect("stat");
        h.update(rel.to_string_lossy().as_bytes());
        h.update(meta.permissions().mode().to_le_bytes());
        h.update(std::fs::read(&f).expect("reading an images/ file"));
    }
    hex::encode(h.finalize())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading images/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The image for `binary`, from the cache under `target/image-qemu/<key>` or built there
/// now with `images/build` (older cached images are removed first). Returns the image and
/// how long building took (zero when cached).
pub fn cached_image(binary: &Path) -> (BuiltImage, Duration) {
    let key = image_key(binary);
    let cache = target_dir().join("image-qemu");
    let dir = cache.join(&key[..16]);
    let image = BuiltImage { dir: dir.clone() };
    if image.rootfs().exists() {
        return (image, Duration::ZERO);
    }
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    std::fs::create_dir_all(&cache).expect("making the image cache dir");
    let start = Instant::now();
    let log = cache.join("build.log");
    let out = Command::new(workspace_root().join("images/build"))
        .arg(binary)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("build log"))
        .stderr(Stdio::piped())
        .output()
        .expect("running images/build");
    assert!(
        out.status.success(),
        "images/build failed ({}): {}\n(full output in {})",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log.display()
    );
    assert!(image.rootfs().exists(), "images/build made no rootfs.ext4");
    (image, start.elapsed())
}

/// Owner and mode of a file inside an ext4 image, as `debugfs stat` reports them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Permission bits, e.g. `0o600`.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

impl std::fmt::Debug for FileStat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mode {:04o} uid {} gid {}",
            self.mode, self.uid, self.gid
        )
    }
}

fn debugfs(image: &Path, request: &str) -> std::process::Output {
    Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .expect("running debugfs (e2fsprogs)")
}

/// `stat` of `path` inside `image`; `None` when there is no such file.
pub fn debugfs_stat(image: &Path, path: &str) -> Option<FileStat> {
    let out = debugfs(image, &format!("stat {path}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        let rest = &text[text.find(name)? + name.len()..];
        rest.split_whitespace().next().map(str::to_string)
    };
    let mode = u32::from_str_radix(&field("Mode:")?, 8).ok()?;
    let uid = field("User:")?.parse().ok()?;
    let gid = field("Group:")?.parse().ok()?;
    Some(FileStat { mode, uid, gid })
}

/// The contents of `path` inside `image`; `None` when there is no such file.
pub fn debugfs_cat(image: &Path, path: &str) -> Option<Vec<u8>> {
    debugfs_stat(image, path)?;
    let out = debugfs(image, &format!("cat {path}"));
    Some(out.stdout)
}

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

impl Accel {
    /// From `CALLGATE_QEMU_ACCEL` (`kvm`, `tcg`, or `auto`/unset: KVM when usable).
    pub fn from_env() -> Accel {
        match std::env::var("CALLGATE_QEMU_ACCEL").as_deref() {
            Ok("kvm") => Accel::Kvm,
            Ok("tcg") => Accel::Tcg,
            Ok("auto") | Err(_) => {
                if kvm_usable() {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                }
            }
            Ok(other) => panic!("CALLGATE_QEMU_ACCEL must be kvm, tcg or auto, not `{other}`"),
        }
    }

    fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg"],
        }
    }
}

/// `/dev/kvm` opens read-write and the CPU advertises virtualization (`vmx`/`svm`). A
/// nested guest can have the device without the flags (a Firecracker VM does); its KVM
/// starts QEMU but the guest kernel hangs, so that counts as unusable.
pub fn kvm_usable() -> bool {
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    device && flags.split_whitespace().any(|f| f == "vmx" || f == "svm")
}

/// A QEMU guest booted from a private copy of an image's root file system.
pub struct Vm {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The loopback port forwarded to the guest's `guest_port`.
    pub host_port: u16,
    root_offset_mib: u64,
}

/// OVMF, the UEFI firmware for QEMU (package `ovmf`).
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// Appends `extra` to the `options` line of the systemd-boot entry on `disk`'s EFI system
/// partition (FAT at 1 MiB), with mtools: no mount.
fn append_to_boot_entry(disk: &Path, scratch: &Path, extra: &str) {
    let fat = format!("{}@@1M", disk.display());
    let entry = "::/loader/entries/callgate.conf";
    let out = Command::new("mtype")
        .args(["-i", &fat, entry])
        .output()
        .expect("running mtype (mtools)");
    assert!(out.status.success(), "reading the boot entry: {out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 boot entry");
    assert!(
        text.contains("\noptions "),
        "no options line in the boot entry: {text}"
    );
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with("options ") {
                format!("{l} {extra}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let local = scratch.join("callgate.conf");
    std::fs::write(&local, edited).expect("writing the edited entry");
    let status = Command::new("mcopy")
        .args(["-o", "-i", &fat])
        .arg(&local)
        .arg(entry)
        .status()
        .expect("running mcopy (mtools)");
    assert!(status.success(), "writing the boot entry back failed");
}

impl Vm {
    /// Copies `image`'s bootable disk (so the cached image stays pristine and the copy can
    /// be read after shutdown), appends `extra_cmdline` to the copy's boot loader entry, then
    /// boots it under UEFI (OVMF): serial console to a file, user-mode networking with
    /// `127.0.0.1:<host_port>` forwarded to the guest's `guest_port`.
    pub fn boot(image: &BuiltImage, accel: Accel, guest_port: u16, extra_cmdline: &str) -> Vm {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = dir.path().join("disk.img");
        let copied = Command::new("cp")
            .arg("--sparse=always")
            .arg(image.disk())
            .arg(&disk)
            .status()
            .expect("running cp");
        assert!(copied.success(), "copying the image's disk failed");
        if !extra_cmdline.is_empty() {
            append_to_boot_entry(&disk, dir.path(), extra_cmdline);
        }
        let host_port = crate::free_loopback_addr().port();
        let console = dir.path().join("console.log");
        let monitor = dir.path().join("monitor.sock");
        let child = Command::new("qemu-system-x86_64")
            .args(accel.qemu_args())
            .args(["-m", "1024", "-smp", "2", "-no-reboot", "-display", "none"])
            .args(["-bios", OVMF])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-nic")
            .arg(format!(
                "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
            ))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("qemu.stderr")).expect("stderr file"))
            .spawn()
            .expect("starting qemu-system-x86_64 (package qemu-system-x86)");
        Vm {
            child: Some(child),
            dir,
            host_port,
            root_offset_mib: image.root_offset_mib(),
        }
    }

    /// The guest's root file system, copied out of its disk (call after power-off).
    pub fn root_partition(&self) -> PathBuf {
        let root = self.dir.path().join("root.ext4");
        let status = Command::new("dd")
            .arg(format!("if={}", self.disk().display()))
            .arg(format!("of={}", root.display()))
            .args(["bs=1M", "conv=sparse", "status=none"])
            .arg(format!("skip={}", self.root_offset_mib))
            .status()
            .expect("running dd");
        assert!(status.success(), "copying the root partition out failed");
        root
    }

    /// The guest's disk (a copy of the image's `disk.img`).
    pub fn disk(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }

    /// Everything the serial console printed so far (lossy UTF-8, `\r` removed).
    pub fn console(&self) -> String {
        let raw = std::fs::read(self.dir.path().join("console.log")).unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\r', "")
    }

    fn qemu_stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.stderr")).unwrap_or_default()
    }

    /// Polls the console until `found` returns `Some`, failing the test (with the console's
    /// tail) after `limit` or when QEMU exits.
    pub async fn wait_for_console<T>(
        &mut self,
        limit: Duration,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            let text = self.console();
            if let Some(v) = found(&text) {
                return v;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "QEMU exited ({status}) before the console showed what was awaited\n\
                     qemu stderr: {}\nconsole tail:\n{}",
                    self.qemu_stderr(),
                    tail(&text, 4000)
                );
            }
            assert!(
                start.elapsed() < limit,
                "the console did not show what was awaited within {limit:?}; tail:\n{}",
                tail(&text, 4000)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Presses the guest's ACPI power button (QEMU monitor `system_powerdown`) and waits for
    /// QEMU to exit; fails the test (after killing QEMU) when the guest does not power off
    /// within `limit`.
    pub async fn power_off(&mut self, limit: Duration) -> ExitStatus {
        let monitor = self.dir.path().join("monitor.sock");
        let mut sock =
            std::os::unix::net::UnixStream::connect(&monitor).expect("connecting the monitor");
        sock.write_all(b"system_powerdown\n")
            .expect("writing to the monitor");
        let start = Instant::now();
        let child = self.child.as_mut().expect("the VM is running");
        loop {
            if let Some(status) = child.try_wait().expect("waiting for QEMU") {
                self.child = None;
                return status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "the guest did not power off within {limit:?}; console tail:\n{}",
                    tail(&self.console(), 4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
