//! The one OpenSSL call the S/MIME step needs that the `openssl` crate
//! does not wrap: `CMS_get0_signers(3)`, which names the certificates that
//! signed a message once `CMS_verify(3)` has found them. This is the only
//! unsafe code outside the spool module.
#![allow(unsafe_code)]

use foreign_types::ForeignTypeRef;
use openssl::cms::CmsContentInfoRef;
use openssl::stack::StackRef;
use openssl::x509::X509;

extern "C" {
    /// OpenSSL 3's `STACK_OF(X509) *CMS_get0_signers(CMS_ContentInfo *cms)`:
    /// a new stack (to be freed with `sk_X509_free`, not its certificates)
    /// of the signer certificates set by the last `CMS_verify`.
    fn CMS_get0_signers(cms: *mut openssl_sys::CMS_ContentInfo) -> *mut openssl_sys::stack_st_X509;
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
