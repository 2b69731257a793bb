//! `init` and `sidecar`: secrets as files, only on a memory filesystem,
//! swapped in whole.
//!
//! The layout is kubelet's `AtomicWriter`'s (Secret and ConfigMap volumes):
//!
//! ```text
//! DIR/..1764842400.123456789.7.1/          one generation (..SECONDS.NANOS.PID.SERIAL): every file, mode 0400 (0440 with a group), dir 0500 (0550)
//! DIR/..data -> ..1764842400.123456789.7.1
//! DIR/DB_PASSWORD -> ..data/DB_PASSWORD   (per-key; or secrets.env / secrets.json)
//! DIR/..ready                              once the first set is written (the startup probe's file)
//! ```
//!
//! A new set is written whole into a new hidden generation directory, then
//! one `rename(2)` of a fresh symlink over `..data` switches every name at
//! once; the old generation is removed after. A reader that opens
//! `DIR/..data/` once and reads its files from there never sees a mixed
//! set; a single-file format (`dotenv`, `json`) is always whole.
//!
//! The directory must be on tmpfs or ramfs (`statfs(2)`); anything else is
//! refused, so a value never reaches a disk.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::fetch::Delivered;

/// `TMPFS_MAGIC` from `<linux/magic.h>`.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `RAMFS_MAGIC` from `<linux/magic.h>`.
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// The symlink that names the current generation.
pub const DATA_LINK: &str = "..data";
/// Created once the first full set is written.
pub const READY_MARKER: &str = "..ready";
/// The file of the `dotenv` format.
pub const DOTENV_FILE: &str = "secrets.env";
/// The file of the `json` format.
pub const JSON_FILE: &str = "secrets.json";

/// How the secrets are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One file per variable, named after it, holding exactly the value.
    #[default]
    PerKey,
    /// `secrets.env`: `KEY='value'` lines, literal in a shell and in dotenv
    /// readers (as `sidekey export`); a value with no inert form is refused.
    Dotenv,
    /// `secrets.json`: one object, variable to value.
    Json,
}

/// Why files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The directory is not on a memory filesystem.
    #[error("--dir {}: the directory is on {fs} (statfs type {magic:#x}), not tmpfs or ramfs: secrets are written only to memory (mount an emptyDir with medium: Memory)", .dir.display())]
    NotMemory {
        /// The directory.
        dir: PathBuf,
        /// A name for its filesystem.
        fs: &'static str,
        /// Its magic number.
        magic: u64,
    },
    /// The directory cannot be examined.
    #[error("--dir {}: {source}", .dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A value cannot be written in the chosen format.
    #[error("{parameter}: the value of {var} is not valid UTF-8 and cannot be written as {format}; use --format per-key")]
    NotText {
        /// The variable.
        var: String,
        /// The parameter it came from.
        parameter: String,
        /// The format.
        format: &'static str,
    },
    /// A value has no dotenv form that every reader takes literally.
    #[error("{parameter}: the value of {var} cannot be written as dotenv: {refusal}")]
    NoDotenvForm {
        /// The variable.
        var: String,
        /// The parameter it came from.
        parameter: String,
        /// The rule (never the value).
        refusal: sidekey_wire::dotenv::DotenvRefusal,
    },
    /// A name in the directory is in the way.
    #[error("{}: exists and is not a symlink this agent made; refusing to replace it", .path.display())]
    InTheWay {
        /// The path.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl FilesError {
    /// 64 for a directory that is not allowed, 65 for a value that cannot
    /// be written in the format, 73 (EX_CANTCREAT) otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FilesError::NotMemory { .. } | FilesError::Dir { .. } => 64,
            FilesError::NotText { .. } | FilesError::NoDotenvForm { .. } => 65,
            FilesError::InTheWay { .. } | FilesError::Io { .. } => 73,
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FilesError + 'a {
    move |source| FilesError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn fs_name(magic: u64) -> &'static str {
    match magic {
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0xFF53_4D42 | 0xFE53_4D42 => "cifs/smb",
        0x0102_1997 => "9p",
        0x6573_5546 => "fuse",
        0x2FC1_2FC1 => "zfs",
        0x7461_636f => "ocfs2",
        0x4d44 => "vfat",
        0x6264_6576 => "devtmpfs",
        0x6265_6572 => "sysfs",
        0x9FA0 => "proc",
        _ => "another filesystem",
    }
}

/// Refuses a directory that does not exist or is not on tmpfs or ramfs.
pub fn check_memory_fs(dir: &Path) -> Result<(), FilesError> {
    let meta = fs::metadata(dir).map_err(|source| FilesError::Dir {
        dir: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(FilesError::Dir {
            dir: dir.to_owned(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let stat = rustix::fs::statfs(dir).map_err(|e| FilesError::Dir {
        dir: dir.to_owned(),
        source: e.into(),
    })?;
    // f_type is signed on some targets; the magic numbers are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    let magic = (stat.f_type as i64 as u64) & 0xFFFF_FFFF;
    if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
        Ok(())
    } else {
        Err(FilesError::NotMemory {
            dir: dir.to_owned(),
            fs: fs_name(magic),
            magic,
        })
    }
}

/// File name and content, the content zeroized on drop.
pub type Rendered = Vec<(String, Zeroizing<Vec<u8>>)>;

/// The files of a set in `format`.
pub fn render(secrets: &[Delivered], format: Format) -> Result<Rendered, FilesError> {
    match format {
        Format::PerKey => Ok(secrets
            .iter()
            .map(|d| (d.var.clone(), Zeroizing::new(d.got.value.expose().to_vec())))
            .collect()),
        Format::Dotenv => {
            // Room for the worst case up front: a growing Vec would leave
            // copies of values in freed memory.
            let cap = secrets
                .iter()
                .map(|d| sidekey_wire::dotenv::line_len(&d.var, "") + d.got.value.len())
                .sum();
            let mut out = Zeroizing::new(Vec::with_capacity(cap));
            for d in secrets {
                let text = utf8(d, "dotenv")?;
                sidekey_wire::dotenv::write_line(&mut out, &d.var, text).map_err(|refusal| {
                    FilesError::NoDotenvForm {
                        var: d.var.clone(),
                        parameter: d.got.path.to_string(),
                        refusal,
                    }
                })?;
            }
            Ok(vec![(DOTENV_FILE.to_owned(), out)])
        }
        Format::Json => {
            // The worst case: `{` and `\n}\n`; per secret `,\n  `, two
            // quoted strings and `: ` (10 bytes) around the name (an env
            // name: nothing to escape) and the value (six bytes per byte
            // at most, `\u00XX`).
            let cap = 4 + secrets
                .iter()
                .map(|d| d.var.len() + 10 + 6 * d.got.value.len())
                .sum::<usize>();
            let mut out = Zeroizing::new(Vec::with_capacity(cap));
            out.push(b'{');
            for (i, d) in secrets.iter().enumerate() {
                let text = utf8(d, "json")?;
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"\n  ");
                sidekey_wire::json::write_bytes(&mut out, &d.var);
                out.extend_from_slice(b": ");
                sidekey_wire::json::write_bytes(&mut out, text);
            }
            out.extend_from_slice(b"\n}\n");
            Ok(vec![(JSON_FILE.to_owned(), out)])
        }
    }
}

fn utf8<'a>(d: &'a Delivered, format: &'static str) -> Result<&'a str, FilesError> {
    d.got.value.expose_str().ok_or_else(|| FilesError::NotText {
        var: d.var.clone(),
        parameter: d.got.path.to_string(),
        format,
    })
}

/// Whether `DIR/..ready` exists: the sidecar's startup probe.
pub fn is_ready(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(READY_MARKER)).is_ok()
}

/// Writes whole sets of files into one directory, atomically.
#[derive(Debug)]
pub struct AtomicDir {
    dir: PathBuf,
    group: Option<u32>,
    serial: u64,
}

impl AtomicDir {
    /// Checks that `dir` is on tmpfs or ramfs and removes what an earlier
    /// run left half-done (generations `..data` does not name, a stale
    /// ready marker).
    pub fn open(dir: &Path, group: Option<u32>) -> Result<AtomicDir, FilesError> {
        check_memory_fs(dir)?;
        let this = AtomicDir {
            dir: dir.to_owned(),
            group,
            serial: 0,
        };
        let ready = dir.join(READY_MARKER);
        if fs::symlink_metadata(&ready).is_ok() {
            fs::remove_file(&ready).map_err(io("removing the stale marker", &ready))?;
        }
        let current = this.current();
        for entry in fs::read_dir(dir).map_err(io("listing", dir))? {
            let entry = entry.map_err(io("listing", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..")
                && name != DATA_LINK
                && Some(name.as_str()) != current.as_deref()
            {
                remove_any(&entry.path())?;
            }
        }
        Ok(this)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generation `..data` names now: only a name of the form this
    /// agent writes (see [`is_generation`]), never a path. Whoever else can
    /// write the directory cannot make the agent keep or remove anything
    /// outside it by pointing `..data` elsewhere.
    fn current(&self) -> Option<String> {
        fs::read_link(self.dir.join(DATA_LINK))
            .ok()
            .and_then(|t| t.to_str().map(str::to_owned))
            .filter(|t| is_generation(t))
    }

    fn modes(&self) -> (u32, u32) {
        if self.group.is_some() {
            (0o440, 0o550)
        } else {
            (0o400, 0o500)
        }
    }

    /// Writes `files` as the new whole set and switches to it.
    pub fn write(&mut self, files: &Rendered) -> Result<(), FilesError> {
        let (file_mode, dir_mode) = self.modes();
        self.serial += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let generation = format!(
            "..{}.{:09}.{}.{}",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id(),
            self.serial
        );
        let gen_dir = self.dir.join(&generation);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&gen_dir)
            .map_err(io("creating", &gen_dir))?;
        if let Err(e) = self.fill(&gen_dir, files, file_mode, dir_mode) {
            let _ = remove_any(&gen_dir);
            return Err(e);
        }
        let old = self.current();

        // The switch: a new symlink renamed over ..data.
        let tmp = self.dir.join("..data_tmp");
        if fs::symlink_metadata(&tmp).is_ok() {
            fs::remove_file(&tmp).map_err(io("removing", &tmp))?;
        }
        symlink(&generation, &tmp).map_err(io("creating symlink", &tmp))?;
        let data = self.dir.join(DATA_LINK);
        fs::rename(&tmp, &data).map_err(io("renaming over", &data))?;

        // Visible names: NAME -> ..data/NAME, made once; stale ones removed.
        for (name, _) in files {
            let link = self.dir.join(name);
            let target = Path::new(DATA_LINK).join(name);
            match fs::read_link(&link) {
                Ok(t) if t == target => {}
                Ok(t) if t.starts_with(DATA_LINK) => {
                    fs::remove_file(&link).map_err(io("removing", &link))?;
                    symlink(&target, &link).map_err(io("creating symlink", &link))?;
                }
                Ok(_) => return Err(FilesError::InTheWay { path: link }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    symlink(&target, &link).map_err(io("creating symlink", &link))?;
                }
                Err(_) => return Err(FilesError::InTheWay { path: link }),
            }
        }
        for entry in fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let entry = entry.map_err(io("listing", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || files.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if let Ok(t) = fs::read_link(entry.path()) {
                if t.starts_with(DATA_LINK) {
                    fs::remove_file(entry.path()).map_err(io("removing", &entry.path()))?;
                }
            }
        }
        if let Some(old) = old.filter(|o| *o != generation) {
            remove_any(&self.dir.join(old))?;
        }
        Ok(())
    }

    fn fill(
        &self,
        gen_dir: &Path,
        files: &Rendered,
        file_mode: u32,
        dir_mode: u32,
    ) -> Result<(), FilesError> {
        for (name, content) in files {
            let path = gen_dir.join(name);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file_mode)
                .open(&path)
                .map_err(io("creating", &path))?;
            file.write_all(content).map_err(io("writing", &path))?;
            // The umask may have narrowed the mode.
            file.set_permissions(fs::Permissions::from_mode(file_mode))
                .map_err(io("setting the mode of", &path))?;
            if let Some(gid) = self.group {
                std::os::unix::fs::fchown(&file, None, Some(gid))
                    .map_err(io("setting the group of", &path))?;
            }
        }
        if let Some(gid) = self.group {
            std::os::unix::fs::chown(gen_dir, None, Some(gid))
                .map_err(io("setting the group of", gen_dir))?;
        }
        fs::set_permissions(gen_dir, fs::Permissions::from_mode(dir_mode))
            .map_err(io("setting the mode of", gen_dir))
    }

    /// Creates the ready marker (mode 0444: a probe may run as anyone).
    pub fn mark_ready(&self) -> Result<(), FilesError> {
        let path = self.dir.join(READY_MARKER);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o444)
            .open(&path)
            .map(drop)
            .map_err(io("creating", &path))
    }
}

/// Whether `name` is a generation directory's name as [`AtomicDir::write`]
/// makes it: `..SECONDS.NANOS.PID.SERIAL`, digits and dots only, so never a
/// path.
fn is_generation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes a file, symlink or generation directory (made writable first:
/// generations are read-only).
fn remove_any(path: &Path) -> Result<(), FilesError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("examining", path)(e)),
    };
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(io("making writable", path))?;
        fs::remove_dir_all(path).map_err(io("removing", path))
    } else {
        fs::remove_file(path).map_err(io("removing", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_control_characters() {
        let mut out = Vec::new();
        sidekey_wire::json::write_bytes(&mut out, "a\"b\\c\nd\u{1}é");
        let s = String::from_utf8(out).expect("utf8");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001é\"");
        let back: String = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn only_generation_names_are_generations() {
        assert!(is_generation("..1764842400.123456789.42.1"));
        for name in [
            "..data",
            "..",
            "../../etc",
            "..1.2.3",
            "..1.2.3.4/..",
            "..1.2.3.x",
            "/tmp/..1.2.3.4",
            "..1.2.3.4.5",
            "1.2.3.4",
        ] {
            assert!(!is_generation(name), "{name}");
        }
    }

    #[test]
    fn a_disk_directory_is_refused() {
        // The target directory is on the build machine's disk.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        match check_memory_fs(dir) {
            Err(FilesError::NotMemory { .. }) => {}
            Ok(()) => eprintln!("skipped: {} is on a memory filesystem", dir.display()),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}
