//! Reading what the user gives: a new value (standard input, a file or
//! `--generate`) and a dotenv file, without leaving copies of secrets in
//! freed memory.

use std::io::{IsTerminal, Read};
use std::path::Path;

use sidekey_envelope::Secret;

use crate::args::ValueSource;
use crate::Failure;

/// The longest value `--generate` makes.
const MAX_GENERATE: usize = 4096;

pub(super) fn zeroize_vec(v: &mut Vec<u8>) {
    use zeroize::Zeroize;
    v.zeroize();
}

pub(super) fn zeroize_string(s: &mut String) {
    use zeroize::Zeroize;
    s.zeroize();
}

/// The new value of a put or rotate: a file, generated, or standard input.
pub(super) fn read_value(source: &ValueSource) -> Result<Secret, Failure> {
    if let Some(n) = source.generate {
        if n == 0 || n > MAX_GENERATE {
            return Err(Failure::usage(format!(
                "--generate {n}: choose 1 to {MAX_GENERATE} characters"
            )));
        }
        return generate(n);
    }
    if let Some(path) = &source.from_file {
        return std::fs::File::open(path)
            .and_then(read_all)
            .map(|mut bytes| Secret::new(std::mem::take(&mut *bytes)))
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", path.display())));
    }
    let stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        return Err(Failure::usage(
            "no value given: pipe it on standard input, or use --from-file FILE or --generate N (values are never read from a terminal, where they would echo)",
        ));
    }
    // Read through a duplicate of the descriptor, unbuffered: standard
    // input's own buffer would keep a copy of the value.
    drop(stdin);
    let mut buf = raw_stdin()
        .and_then(read_all)
        .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?;
    Ok(Secret::new(std::mem::take(&mut *buf)))
}

/// Standard input as an unbuffered file (a duplicate of descriptor 0).
fn raw_stdin() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(
        std::io::stdin().as_fd().try_clone_to_owned()?,
    ))
}

/// Reads all of `r` (a secret value, a dotenv file) leaving no copy
/// behind: the buffer grows by moving into one twice its size and
/// zeroizing the old one, where `read_to_end` would hand the old one back
/// to the allocator as it is.
fn read_all(mut r: impl Read) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    use zeroize::Zeroizing;
    let mut buf = Zeroizing::new(Vec::with_capacity(8 * 1024));
    let mut chunk = Zeroizing::new([0u8; 8 * 1024]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.len() + n > buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (buf.len() + n).max(buf.capacity().saturating_mul(2)),
            ));
            bigger.extend_from_slice(&buf);
            // The old buffer is zeroized as it drops.
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// N characters from A-Z, a-z, 0-9, uniformly (rejection sampling over
/// random bytes from the system's CSPRNG through ring).
fn generate(n: usize) -> Result<Secret, Failure> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        rng.fill(&mut buf)
            .map_err(|_| Failure::failed("the system random number generator failed"))?;
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would bias the choice.
            if b < 248 && out.len() < n {
                out.push(ALPHABET[(b % 62) as usize]);
            }
        }
    }
    zeroize_bytes(&mut buf);
    Ok(Secret::new(out))
}

fn zeroize_bytes(b: &mut [u8]) {
    use zeroize::Zeroize;
    b.zeroize();
}

/// A dotenv file's text (its values are secrets: zeroized when dropped).
pub(super) fn read_text_input(file: &Path) -> Result<zeroize::Zeroizing<String>, Failure> {
    let mut bytes = if file.as_os_str() == "-" {
        raw_stdin()
            .and_then(read_all)
            .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::File::open(file)
            .and_then(read_all)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?
    };
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(zeroize::Zeroizing::new(text)),
        Err(e) => {
            drop(zeroize::Zeroizing::new(e.into_bytes()));
            Err(Failure::usage(format!(
                "{}: a dotenv file must be UTF-8 text",
                file.display()
            )))
        }
    }
}
