//! The embedded local store: parameters, versions, labels and history in
//! one redb database file, plus a local master key file that stands in for
//! KMS. For laptops, the quick start and fast tests.
//!
//! Layout of a store directory (`--store file:DIR`):
//! - `DIR/params.redb`: name -> JSON of every kept version (the last 100,
//!   as SSM keeps). Values are envelopes: ciphertext only.
//! - `DIR/master.key`: the master key, mode 0600. Whoever reads it can
//!   decrypt everything in the store: it plays the part of KMS.
//!
//! Permissions are checked on every open, and refused with an error naming
//! the path and the rule: `DIR` must be a directory owned by the current
//! (effective) user with no access for group or others (it is created
//! 0700); `master.key` is opened without following a symbolic link
//! (`O_NOFOLLOW`) and must be a regular file owned by the current user and
//! readable by nobody else; `params.redb` is created 0600, also opened
//! without following a link, and must be owned by the current user.
//!
//! The database is opened for each operation and closed after it, so the
//! CLI and an agent can take turns on the same store.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sidekey_envelope::{LocalMasterKey, Secret};

use crate::error::{Result, StoreError};
use crate::params::{HistoryEntry, ParamInfo, ParamType, PutRequest, StoredParam};

const PARAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("params");
/// SSM keeps the last 100 versions of a parameter; so does the local store.
const KEEP_VERSIONS: usize = 100;
const DB_FILE: &str = "params.redb";
const KEY_FILE: &str = "master.key";

#[derive(Debug, Serialize, Deserialize, Default)]
struct Versions {
    versions: Vec<Version>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Version {
    version: u64,
    value: String,
    secure: bool,
    modified_ms: u64,
    user: String,
    labels: Vec<String>,
}

/// The local parameter store.
#[derive(Debug, Clone)]
pub struct LocalParams {
    dir: PathBuf,
    user: String,
}

impl LocalParams {
    /// A store in `dir` (created on first write); `user` is recorded as the
    /// author of writes.
    pub fn new(dir: impl Into<PathBuf>, user: impl Into<String>) -> LocalParams {
        LocalParams {
            dir: dir.into(),
            user: user.into(),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    fn db_error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            path: self.db_path(),
            message: e.to_string(),
        }
    }

    /// Opens the database, creating the directory when `create` is set.
    /// Another process may hold it for a moment: wait up to five seconds.
    fn open(&self, create: bool) -> Result<Option<Database>> {
        let path = self.db_path();
        if !self.dir.exists() {
            if !create {
                return Ok(None);
            }
            create_private_dir(&self.dir)?;
        }
        check_private_dir(&self.dir)?;
        if !create && fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        let mut waited = Duration::ZERO;
        loop {
            let file = open_db_file(&path)?;
            match Database::builder().create_file(file) {
                Ok(db) => return Ok(Some(db)),
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if waited < Duration::from_secs(5) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                    waited += Duration::from_millis(20);
                }
                Err(e) => return Err(self.db_error(e)),
            }
        }
    }

    fn read_all(&self, name: &str) -> Result<Option<Versions>> {
        let Some(db) = self.open(false)? else {
            return Ok(None);
        };
        let txn = db.begin_read().map_err(|e| self.db_error(e))?;
        let table = match txn.open_table(PARAMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.db_error(e)),
        };
        let Some(raw) = table.get(name).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        self.decode(name, raw.value()).map(Some)
    }

    fn decode(&self, name: &str, raw: &[u8]) -> Result<Versions> {
        serde_json::from_slice(raw)
            .map_err(|e| self.db_error(format!("record {name} is damaged: {e}")))
    }

    /// Every (name, versions) whose name starts with `prefix`.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Versions)>> {
        let Some(db) = self.open(false)? else {
            return Ok(Vec::new());
        };
        let txn = db.begin_read().map_err(|e| self.db_error(e))?;
        let table = match txn.open_table(PARAMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.db_error(e)),
        };
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(|e| self.db_error(e))? {
            let (k, v) = item.map_err(|e| self.db_error(e))?;
            let name = k.value();
            if !name.starts_with(prefix) {
                break;
            }
            out.push((name.to_owned(), self.decode(name, v.value())?));
        }
        Ok(out)
    }

    /// Changes one record inside a write transaction: all or nothing.
    fn update<T>(&self, name: &str, change: impl FnOnce(&mut Versions) -> Result<T>) -> Result<T> {
        let db = self
            .open(true)?
            .ok_or_else(|| self.db_error("could not be created"))?;
        let txn = db.begin_write().map_err(|e| self.db_error(e))?;
        let result = {
            let mut table = txn.open_table(PARAMS).map_err(|e| self.db_error(e))?;
            let mut versions = match table.get(name).map_err(|e| self.db_error(e))? {
                Some(raw) => self.decode(name, raw.value())?,
                None => Versions::default(),
            };
            let result = change(&mut versions)?;
            if versions.versions.is_empty() {
                table.remove(name).map_err(|e| self.db_error(e))?;
            } else {
                let raw = serde_json::to_vec(&versions).map_err(|e| self.db_error(e))?;
                table
                    .insert(name, raw.as_slice())
                    .map_err(|e| self.db_error(e))?;
            }
            result
        };
        txn.commit().map_err(|e| self.db_error(e))?;
        Ok(result)
    }

    pub(crate) fn put(&self, req: &PutRequest<'_>) -> Result<u64> {
        if req.param_type == ParamType::SecureString {
            return Err(StoreError::Invalid(format!(
                "{}: the local store keeps only sidekey envelopes; --native writes SSM SecureStrings (use --store ssm)",
                req.name
            )));
        }
        let value = std::str::from_utf8(req.value)
            .map_err(|_| StoreError::Invalid(format!("value for {} is not text", req.name)))?
            .to_owned();
        let user = self.user.clone();
        self.update(req.name, |v| {
            let last = v.versions.last().map_or(0, |l| l.version);
            if last > 0 && !req.overwrite {
                return Err(StoreError::Invalid(format!(
                    "parameter {} already exists (ParameterAlreadyExists)",
                    req.name
                )));
            }
            v.versions.push(Version {
                version: last + 1,
                value,
                secure: false,
                modified_ms: now_ms(),
                user,
                labels: Vec::new(),
            });
            if v.versions.len() > KEEP_VERSIONS {
                let excess = v.versions.len() - KEEP_VERSIONS;
                v.versions.drain(..excess);
            }
            Ok(last + 1)
        })
    }

    pub(crate) fn label(&self, name: &str, version: u64, label: &str) -> Result<()> {
        self.update(name, |v| {
            if v.versions.is_empty() {
                return Err(StoreError::NotFound {
                    name: name.to_owned(),
                });
            }
            if !v.versions.iter().any(|x| x.version == version) {
                return Err(StoreError::VersionNotFound {
                    name: name.to_owned(),
                    selector: version.to_string(),
                });
            }
            for x in &mut v.versions {
                x.labels.retain(|l| l != label);
                if x.version == version {
                    x.labels.push(label.to_owned());
                }
            }
            Ok(())
        })
    }

    pub(crate) fn get(&self, name: &str, selector: Option<&str>) -> Result<StoredParam> {
        let versions = self.read_all(name)?.ok_or_else(|| StoreError::NotFound {
            name: name.to_owned(),
        })?;
        pick(name, &versions, selector)
    }

    pub(crate) fn get_many(&self, names: &[String]) -> Result<(Vec<StoredParam>, Vec<String>)> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for full in names {
            let (name, selector) = match full.rfind(':') {
                Some(i) => (&full[..i], Some(&full[i..])),
                None => (full.as_str(), None),
            };
            match self.get(name, selector) {
                Ok(p) => found.push(p),
                Err(StoreError::NotFound { .. } | StoreError::VersionNotFound { .. }) => {
                    missing.push(full.clone())
                }
                Err(e) => return Err(e),
            }
        }
        Ok((found, missing))
    }

    pub(crate) fn get_by_path(&self, path: &str, recursive: bool) -> Result<Vec<StoredParam>> {
        let mut out = Vec::new();
        for (name, versions) in self.scan(path)? {
            if !recursive && name[path.len()..].contains('/') {
                continue;
            }
            out.push(pick(&name, &versions, None)?);
        }
        Ok(out)
    }

    pub(crate) fn describe(&self, path: &str) -> Result<Vec<ParamInfo>> {
        let mut out = Vec::new();
        for (name, versions) in self.scan(path)? {
            if let Some(v) = versions.versions.last() {
                out.push(ParamInfo {
                    name,
                    version: v.version,
                    param_type: param_type(v),
                    last_modified: Some(from_ms(v.modified_ms)),
                    last_modified_user: Some(v.user.clone()),
                });
            }
        }
        Ok(out)
    }

    pub(crate) fn info(&self, name: &str) -> Result<ParamInfo> {
        let not_found = || StoreError::NotFound {
            name: name.to_owned(),
        };
        let versions = self.read_all(name)?.ok_or_else(not_found)?;
        let v = versions.versions.last().ok_or_else(not_found)?;
        Ok(ParamInfo {
            name: name.to_owned(),
            version: v.version,
            param_type: param_type(v),
            last_modified: Some(from_ms(v.modified_ms)),
            last_modified_user: Some(v.user.clone()),
        })
    }

    pub(crate) fn history(&self, name: &str) -> Result<Vec<HistoryEntry>> {
        let versions = self.read_all(name)?.ok_or_else(|| StoreError::NotFound {
            name: name.to_owned(),
        })?;
        Ok(versions
            .versions
            .iter()
            .map(|v| HistoryEntry {
                version: v.version,
                param_type: param_type(v),
                last_modified: Some(from_ms(v.modified_ms)),
                last_modified_user: Some(v.user.clone()),
                labels: v.labels.clone(),
            })
            .collect())
    }

    pub(crate) fn delete(&self, names: &[String]) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        if self.open(false)?.is_none() {
            return Ok(names.to_vec());
        }
        for name in names {
            let existed = self.update(name, |v| {
                let existed = !v.versions.is_empty();
                v.versions.clear();
                Ok(existed)
            })?;
            if !existed {
                missing.push(name.clone());
            }
        }
        Ok(missing)
    }
}

fn param_type(v: &Version) -> ParamType {
    if v.secure {
        ParamType::SecureString
    } else {
        ParamType::String
    }
}

/// Resolves SSM's `:N` / `:label` selector against the kept versions.
fn pick(name: &str, versions: &Versions, selector: Option<&str>) -> Result<StoredParam> {
    let chosen = match selector.map(|s| s.trim_start_matches(':')) {
        None | Some("") => versions.versions.last(),
        Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u64 = s.parse().unwrap_or(0);
            versions.versions.iter().find(|v| v.version == n)
        }
        Some(label) => versions
            .versions
            .iter()
            .find(|v| v.labels.iter().any(|l| l == label)),
    };
    let v = chosen.ok_or_else(|| match selector {
        Some(s) if !versions.versions.is_empty() => StoreError::VersionNotFound {
            name: name.to_owned(),
            selector: s.trim_start_matches(':').to_owned(),
        },
        _ => StoreError::NotFound {
            name: name.to_owned(),
        },
    })?;
    Ok(StoredParam {
        name: name.to_owned(),
        value: Secret::from_slice(v.value.as_bytes()),
        version: v.version,
        param_type: param_type(v),
        last_modified: Some(from_ms(v.modified_ms)),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StoreError::Io {
        what: "cannot create the local store directory",
        path: dir.to_owned(),
        source,
    })?;
    check_private_dir(dir)
}

/// The effective user id: who must own the store.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The store directory must be this user's and closed to everyone else:
/// whoever can write to it could swap `master.key` or `params.redb`.
fn check_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(|source| StoreError::Io {
        what: "cannot read the local store directory",
        path: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(StoreError::Config(format!(
            "local store directory {} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != euid() {
        return Err(StoreError::Config(format!(
            "local store directory {} is owned by uid {}, not by this user (uid {}): refused, \
             it holds the store's master key",
            dir.display(),
            meta.uid(),
            euid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Config(format!(
            "local store directory {} has mode {mode:o}: it must be 0700, no access for group or \
             others (chmod 700)",
            dir.display()
        )));
    }
    Ok(())
}

/// `O_NOFOLLOW | O_CLOEXEC`, for `OpenOptionsExt::custom_flags`.
fn no_follow() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

fn is_symlink_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Opens (creating it 0600) the database file without following a link,
/// and checks it is this user's.
fn open_db_file(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(path)
        .map_err(|source| {
            if is_symlink_error(&source) {
                StoreError::Config(format!(
                    "local store database {} is a symbolic link: refused (it is opened without following links)",
                    path.display()
                ))
            } else {
                StoreError::Io {
                    what: "cannot open the local store database",
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| StoreError::Io {
        what: "cannot read the local store database",
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() || meta.uid() != euid() {
        return Err(StoreError::Config(format!(
            "local store database {} must be a regular file owned by this user (uid {}): refused",
            path.display(),
            euid()
        )));
    }
    Ok(file)
}

/// Loads the master key of the store in `dir`, creating it (mode 0600,
/// written atomically) when `create` is set and it does not exist yet.
///
/// The directory and the key file must pass the checks in the module docs:
/// the key is opened without following a symbolic link, and must be a
/// regular file owned by this user and readable by nobody else.
pub fn load_master_key(dir: &Path, create: bool) -> Result<Option<LocalMasterKey>> {
    let path = dir.join(KEY_FILE);
    if dir.exists() {
        check_private_dir(dir)?;
    } else if !create {
        return Ok(None);
    }
    match read_key_file(&path).map(zeroize::Zeroizing::new) {
        Ok(text) => LocalMasterKey::from_file_text(&text)
            .map(Some)
            .map_err(|e| StoreError::Config(format!("master key file {}: {e}", path.display()))),
        Err(KeyFileError::Refused(e)) => Err(e),
        Err(KeyFileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return Ok(None);
            }
            create_private_dir(dir)?;
            let key = LocalMasterKey::generate(&ring::rand::SystemRandom::new())
                .map_err(|e| StoreError::Config(format!("cannot generate a master key: {e}")))?;
            let text = zeroize::Zeroizing::new(key.to_file_text());
            write_new_private_file(&path, text.as_bytes())?;
            // Another process may have created it first: use what is on disk.
            load_master_key(dir, false)
        }
        Err(KeyFileError::Io(source)) => Err(StoreError::Io {
            what: "cannot read the master key file",
            path,
            source,
        }),
    }
}

/// Reads the key file without following a symbolic link, refusing one
/// that is not a regular file, not this user's, or open to others: it is
/// the whole store's key. `Err(io)` only for "not found" and read errors.
fn read_key_file(path: &Path) -> Result<String, KeyFileError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(no_follow())
        .open(path)
        .map_err(|e| {
            if is_symlink_error(&e) {
                KeyFileError::Refused(StoreError::Config(format!(
                    "master key file {} is a symbolic link: refused (it is opened without following links, so it cannot be pointed at another key)",
                    path.display()
                )))
            } else {
                KeyFileError::Io(e)
            }
        })?;
    let meta = file.metadata().map_err(KeyFileError::Io)?;
    let refuse = |rule: String| {
        KeyFileError::Refused(StoreError::Config(format!(
            "master key file {} {rule}",
            path.display()
        )))
    };
    if !meta.is_file() {
        return Err(refuse("is not a regular file: refused".to_owned()));
    }
    if meta.uid() != euid() {
        return Err(refuse(format!(
            "is owned by uid {}, not by this user (uid {}): refused",
            meta.uid(),
            euid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "has mode {mode:o}: it must not be readable by group or others (chmod 600)"
        )));
    }
    // Sized once from the file's length, so that reading leaves no
    // reallocated copy of the key behind (the caller zeroizes the text).
    let mut text = String::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1);
    file.read_to_string(&mut text).map_err(KeyFileError::Io)?;
    Ok(text)
}

/// Why the key file could not be read.
enum KeyFileError {
    Io(std::io::Error),
    Refused(StoreError),
}

/// Writes a new file with mode 0600 through a temporary name and a rename,
/// so a crash never leaves a half-written key. Fails if it already exists.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| StoreError::Io {
        what: "cannot write the master key file",
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    // hard_link fails if the target exists: two first writers cannot both win.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(e)),
    }
}
