//! The OpenSSL uses the S/MIME step needs that the `openssl` crate does not
//! wrap: `CMS_get0_signers(3)`, which names the certificates that signed a
//! message once `CMS_verify(3)` has found them; `CMS_decrypt(3)` into a
//! file, and `CMS_verify(3)` into nothing, rather than into memory (the
//! crate collects the content in a memory BIO and copies it out: two copies
//! of a 37 MiB message next to the parsed structure); and content handed
//! over where it lies (a read-only memory BIO, or a file read with
//! read(2)). These are popspool's only direct OpenSSL calls; its other
//! unsafe code is system calls (the spool, `fsafe`, a password command's
//! process group).
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::ptr;

use foreign_types::ForeignTypeRef;
use openssl::cms::{CMSOptions, CmsContentInfoRef};
use openssl::error::ErrorStack;
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::StackRef;
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509Ref, X509};

/// `BIO_NOCLOSE`: freeing the BIO leaves the descriptor open (the `File`
/// owns it).
const BIO_NOCLOSE: libc::c_int = 0;

extern "C" {
    /// OpenSSL 3's `STACK_OF(X509) *CMS_get0_signers(CMS_ContentInfo *cms)`:
    /// a new stack (to be freed with `sk_X509_free`, not its certificates)
    /// of the signer certificates set by the last `CMS_verify`.
    fn CMS_get0_signers(cms: *mut openssl_sys::CMS_ContentInfo) -> *mut openssl_sys::stack_st_X509;
    /// `BIO *BIO_new_fd(int fd, int close_flag)`: a BIO writing to `fd`
    /// with write(2), or reading it with read(2).
    fn BIO_new_fd(fd: libc::c_int, close_flag: libc::c_int) -> *mut openssl_sys::BIO;
}

/// Content handed to OpenSSL where it lies.
#[derive(Clone, Copy)]
pub enum Content<'a> {
    /// In memory.
    Bytes(&'a [u8]),
    /// A whole file, read from its start (a signed part too big to hold).
    File(&'a File),
}

/// A BIO this module created, freed when dropped; null stands for "none".
struct Bio<'a> {
    ptr: *mut openssl_sys::BIO,
    /// What a memory BIO reads, borrowed while it lives.
    _reads: PhantomData<&'a [u8]>,
}

impl<'a> Bio<'a> {
    /// A BIO reading `content`, or none.
    fn reading(content: Option<Content<'a>>) -> Result<Bio<'a>, ErrorStack> {
        let data = match content {
            None => return Ok(Bio::from_ptr(ptr::null_mut())),
            Some(Content::Bytes(data)) => data,
            Some(Content::File(mut file)) => {
                // A file BIO reads on from the descriptor's offset, which
                // an earlier reading left at the end.
                file.seek(SeekFrom::Start(0))
                    .map_err(|_| ErrorStack::get())?;
                // SAFETY: as in `writing`; BIO_new_fd reads with read(2).
                let ptr = unsafe { BIO_new_fd(file.as_raw_fd(), BIO_NOCLOSE) };
                return Bio::created(ptr);
            }
        };
        // Over 2 GiB, a memory BIO cannot be told its length.
        let len = libc::c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
        // SAFETY: BIO_new_mem_buf makes a read-only BIO over `len` bytes
        // of `data`, which the returned value borrows for as long as it lives.
        let ptr = unsafe { openssl_sys::BIO_new_mem_buf(data.as_ptr().cast(), len) };
        Bio::created(ptr)
    }

    /// A BIO writing to `file` with write(2), leaving the descriptor open.
    fn writing(file: &'a File) -> Result<Bio<'a>, ErrorStack> {
        // SAFETY: the descriptor stays open while `file`, which the
        // returned value borrows, lives; BIO_NOCLOSE leaves closing it to
        // `file`.
        let ptr = unsafe { BIO_new_fd(file.as_raw_fd(), BIO_NOCLOSE) };
        Bio::created(ptr)
    }

    fn created(ptr: *mut openssl_sys::BIO) -> Result<Bio<'a>, ErrorStack> {
        if ptr.is_null() {
            Err(ErrorStack::get())
        } else {
            Ok(Bio::from_ptr(ptr))
        }
    }

    fn from_ptr(ptr: *mut openssl_sys::BIO) -> Bio<'a> {
        Bio {
            ptr,
            _reads: PhantomData,
        }
    }
}

impl Drop for Bio<'_> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: created by this module and freed once, here.
            unsafe { openssl_sys::BIO_free_all(self.ptr) }
        }
    }
}

/// 1 from OpenSSL is success; anything else leaves its reasons queued.
fn ok(r: libc::c_int) -> Result<(), ErrorStack> {
    if r == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// Decrypt `cms` for the recipient `cert` (whose key is `key`) straight
/// into `out`, as OpenSSL produces it, a few KiB at a time; the encrypted
/// content is `detached` when the envelope was parsed without it. On an
/// error part of the output may already be in the file: the caller
/// discards it.
pub fn decrypt_into(
    cms: &CmsContentInfoRef,
    key: &PKeyRef<Private>,
    cert: &X509Ref,
    detached: Option<&[u8]>,
    out: &File,
) -> Result<(), ErrorStack> {
    let content = Bio::reading(detached.map(Content::Bytes))?;
    let sink = Bio::writing(out)?;
    // SAFETY: `cms`, `key` and `cert` are borrowed for the call, the BIOs
    // live until after it; CMS_decrypt keeps none of them.
    ok(unsafe {
        openssl_sys::CMS_decrypt(
            cms.as_ptr(),
            key.as_ptr(),
            cert.as_ptr(),
            content.ptr,
            sink.ptr,
            0,
        )
    })
}

/// `CMS_verify` of `cms` over `detached` (or its own content) against
/// `store` (none: the signature alone, with `NOVERIFY` in `flags`),
/// writing the content nowhere. The crate's `verify` always collects the
/// content in a memory BIO: a copy of a big signed message per check.
pub fn verify(
    cms: &CmsContentInfoRef,
    store: Option<&X509StoreRef>,
    detached: Option<Content<'_>>,
    flags: CMSOptions,
) -> Result<(), ErrorStack> {
    let content = Bio::reading(detached)?;
    // SAFETY: `cms` and `store` are borrowed for the call, the BIO lives
    // until after it; a null `out` makes CMS_verify discard the content.
    ok(unsafe {
        openssl_sys::CMS_verify(
            cms.as_ptr(),
            ptr::null_mut(),
            store.map_or(ptr::null_mut(), |s| s.as_ptr()),
            content.ptr,
            ptr::null_mut(),
            flags.bits(),
        )
    })
}

/// The signer certificates `CMS_verify` found in `cms`, in signer order;
/// empty when it found none.
pub fn signers(cms: &CmsContentInfoRef) -> Vec<X509> {
    // SAFETY: `cms` is a valid CMS_ContentInfo for the call. The returned
    // stack holds certificates owned by `cms`: each is copied (its
    // reference count raised) by `to_owned` before the stack itself is
    // freed; the borrowed `StackRef` does not outlive it.
    unsafe {
        let p = CMS_get0_signers(cms.as_ptr());
        if p.is_null() {
            // No signer found: nothing was allocated, but an error may be queued.
            let _ = openssl::error::ErrorStack::get();
            return Vec::new();
        }
        let certs: Vec<X509> = StackRef::<X509>::from_ptr(p)
            .iter()
            .map(|c| c.to_owned())
            .collect();
        openssl_sys::OPENSSL_sk_free(p.cast());
        certs
    }
}
