//! `ready --dir DIR`: the files sidecar's readiness probe.

use std::path::Path;

use crate::files;
use crate::Failure;

/// Succeeds once the first set of files is in place (the ready marker),
/// exit 1 before.
pub(crate) fn ready(dir: &Path) -> Result<(), Failure> {
    if files::is_ready(dir) {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!(
                "{}: not ready: no {} marker yet",
                dir.display(),
                files::READY_MARKER
            ),
        ))
    }
}
