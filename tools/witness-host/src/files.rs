//! Creating files safely in directories others may write: every file the
//! witness host and the loader write is created with `O_CREAT|O_EXCL`
//! (`create_new`) and `O_NOFOLLOW`, so a file or symbolic link planted at
//! the path is refused, never opened or followed; temporary files get an
//! unpredictable name (random, from the operating system) and are renamed
//! over their target, which replaces a planted link rather than writing
//! through it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How many random names [`create_unique`] tries before giving up.
const UNIQUE_TRIES: u32 = 16;

/// Create `path` for writing with permission bits `mode`; fails with
/// `AlreadyExists` if anything (a file, a symbolic link, dangling or not)
/// is there already.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `N` random bytes from the operating system (keys, boot ids, file names).
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// `n` random bytes as lower-case hex, from the operating system.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(rvm_abi::hex::to_string(&bytes))
}

/// Create a new file `<dir>/<prefix><random><suffix>` (mode `mode`) that
/// did not exist before; returns its path and the open file.
pub fn create_unique(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    mode: u32,
) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..UNIQUE_TRIES {
        let path = dir.join(format!("{prefix}{}{suffix}", random_hex(12)?));
        match create_new(&path, mode) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no unique name")))
}

/// Write `bytes` to `path` (mode `mode`) through a synced temporary file
/// with an unpredictable name in the same directory, created exclusively,
/// then renamed over `path`. The temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut f) = create_unique(dir, &format!(".{name}.tmp-"), "", mode)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A file removed when dropped (unless [`TempFile::keep`] is called).
#[derive(Debug)]
pub struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// Write `bytes` to a new file `<dir>/<prefix><random><suffix>`, mode
    /// `mode`, created exclusively (see [`create_unique`]).
    pub fn write_new(
        dir: &Path,
        prefix: &str,
        suffix: &str,
        mode: u32,
        bytes: &[u8],
    ) -> io::Result<Self> {
        let (path, mut f) = create_unique(dir, prefix, suffix, mode)?;
        let me = Self { path: Some(path) };
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(me)
    }

    /// The file's path (`None` once removed).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Remove the file now; true if it was there.
    pub fn remove(&mut self) -> bool {
        match self.path.take() {
            Some(p) => fs::remove_file(p).is_ok(),
            None => false,
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "rvm-files-{tag}-{}-{}",
            std::process::id(),
            random_hex(4).unwrap()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_planted_file_or_link_is_refused_and_never_followed() {
        let d = dir("plant");
        let target = d.join("captured");
        // A symbolic link to a file the attacker would read afterwards.
        let link = d.join("bundle.bin");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_new(&link, 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(!target.exists(), "the link was followed");
        // A link to an existing file: refused, the file untouched.
        fs::write(&target, b"attacker").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(create_new(&link, 0o600).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"attacker");
        // A pre-created plain file (readable by its creator): refused.
        let planted = d.join("planted");
        fs::write(&planted, b"").unwrap();
        assert_eq!(
            create_new(&planted, 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_atomic_replaces_a_planted_link_instead_of_writing_through_it() {
        let d = dir("atomic");
        let target = d.join("elsewhere");
        fs::write(&target, b"keep").unwrap();
        let path = d.join("state.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"new");
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_files_are_private_unique_and_removed() {
        let d = dir("temp");
        let a = TempFile::write_new(&d, "b-", ".bin", 0o600, b"x").unwrap();
        let b = TempFile::write_new(&d, "b-", ".bin", 0o600, b"y").unwrap();
        let (pa, pb) = (
            a.path().unwrap().to_path_buf(),
            b.path().unwrap().to_path_buf(),
        );
        assert_ne!(pa, pb);
        assert_eq!(
            fs::metadata(&pa).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(a);
        assert!(!pa.exists());
        let mut b = b;
        assert!(b.remove());
        assert!(!pb.exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
