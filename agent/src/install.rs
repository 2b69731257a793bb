//! `install DIR`: copies the agent into the shared volume the app's
//! container runs it from.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Failure, EXIT_CANTCREAT};

/// Copies this binary to `DIR/sidekey-agent`, mode 0555, through a
/// temporary file and a rename (a reader never sees half a binary).
pub(crate) fn install(dir: &Path) -> Result<(), Failure> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        Failure::new(EXIT_CANTCREAT, format!("{what} {}: {e}", path.display()))
    };
    let self_path = Path::new("/proc/self/exe");
    let mut source = match std::fs::File::open(self_path) {
        Ok(f) => f,
        Err(_) => {
            let exe = std::env::current_exe().map_err(|e| fail("cannot find", self_path, e))?;
            std::fs::File::open(&exe).map_err(|e| fail("cannot read", &exe, e))?
        }
    };
    let target = dir.join("sidekey-agent");
    let tmp = dir.join(format!(".sidekey-agent.tmp.{}", std::process::id()));
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)
            .map_err(|e| fail("cannot create", &tmp, e))?;
        std::io::copy(&mut source, &mut out).map_err(|e| fail("cannot write", &tmp, e))?;
        out.sync_all().map_err(|e| fail("cannot write", &tmp, e))?;
        out.set_permissions(std::fs::Permissions::from_mode(0o555))
            .map_err(|e| fail("cannot set the mode of", &tmp, e))?;
        drop(out);
        std::fs::rename(&tmp, &target).map_err(|e| fail("cannot rename to", &target, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
