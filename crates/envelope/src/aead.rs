//! The one place AES-256-GCM is called. [`crate::seal`], [`crate::open`] and
//! the local master key all go through these two functions, and the tests
//! below check them against the GCM specification's test vectors.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::EnvelopeError;

fn key(key: &[u8; 32]) -> LessSafeKey {
    // Cannot fail: AES_256_GCM takes exactly 32 bytes and the type says so.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key is valid"))
}

/// Encrypts `plaintext`, returning ciphertext followed by the 16-byte tag.
///
/// The plaintext is copied into a buffer sized up front (so it is never
/// reallocated) and encrypted in place; on failure that buffer is zeroized.
pub(crate) fn seal(
    k: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buf.extend_from_slice(plaintext);
    key(k)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut *buf,
        )
        .map_err(|_| EnvelopeError::Seal)?;
    // Now ciphertext, not plaintext: move it out without copying.
    Ok(std::mem::take(&mut *buf))
}

/// Decrypts ciphertext-with-tag into a zeroizing buffer holding exactly the
/// plaintext. `None` if authentication fails (the buffer is zeroized).
pub(crate) fn open(
    k: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < TAG_LEN {
        return None;
    }
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = key(k)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf[..],
        )
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    struct Vector {
        name: &'static str,
        key: &'static str,
        nonce: &'static str,
        aad: &'static str,
        plaintext: &'static str,
        ciphertext: &'static str,
        tag: &'static str,
    }

    /// From McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)",
    /// appendix B (the AES-256 cases, 96-bit IVs), as republished in the NIST
    /// GCM validation material. Typed in from the paper, not generated here.
    const VECTORS: &[Vector] = &[
        Vector {
            name: "test case 13 (empty plaintext, no aad)",
            key: "0000000000000000000000000000000000000000000000000000000000000000",
            nonce: "000000000000000000000000",
            aad: "",
            plaintext: "",
            ciphertext: "",
            tag: "530f8afbc74536b9a963b4f1c4cb738b",
        },
        Vector {
            name: "test case 14 (one zero block)",
            key: "0000000000000000000000000000000000000000000000000000000000000000",
            nonce: "000000000000000000000000",
            aad: "",
            plaintext: "00000000000000000000000000000000",
            ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
            tag: "d0d1c8a799996bf0265b98b5d48ab919",
        },
        Vector {
            name: "test case 16 (60-byte plaintext, 20-byte aad)",
            key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            nonce: "cafebabefacedbaddecaf888",
            aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                        1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            tag: "76fc6ece0f4e1768cddf8853bb2d551b",
        },
    ];

    #[test]
    fn gcm_spec_vectors() {
        for v in VECTORS {
            let k: [u8; 32] = h(v.key).try_into().unwrap();
            let nonce: [u8; 12] = h(v.nonce).try_into().unwrap();
            let aad = h(v.aad);
            let pt = h(v.plaintext);
            let mut expected = h(v.ciphertext);
            expected.extend(h(v.tag));

            let sealed = seal(&k, nonce, &aad, &pt).unwrap();
            assert_eq!(hex::encode(&sealed), hex::encode(&expected), "{}", v.name);

            let opened = open(&k, nonce, &aad, &expected).unwrap();
            assert_eq!(&opened[..], &pt[..], "{}", v.name);

            let mut bad = expected.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(open(&k, nonce, &aad, &bad).is_none(), "{}", v.name);
            let mut other_aad = aad.clone();
            other_aad.push(0);
            assert!(
                open(&k, nonce, &other_aad, &expected).is_none(),
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn open_rejects_short_input() {
        for len in 0..TAG_LEN {
            assert!(open(&[0; 32], [0; 12], b"", &vec![0; len]).is_none());
        }
    }
}
