//! Spec fingerprints: a keyed hash (HMAC-SHA256) of the whole spec, header
//! values and secret references included. The key is the store's, never
//! sent, so a fingerprint says whether two specs are the same without
//! saying anything about the secrets in them; `recur task apply` compares
//! the fingerprint of a `validate_only` answer with the stored task's.

use aws_lc_rs::hmac;
use prost::Message;

use super::convert::spec_to_proto_unredacted;
use crate::{pb::v1 as pb, task::TaskSpec};

/// Hashes specs with the store's fingerprint key.
pub struct Fingerprints {
    key: hmac::Key,
}

impl Fingerprints {
    /// With `key`, the store's (see [`crate::store::Store::fingerprint_key`]).
    pub fn new(key: &[u8]) -> Fingerprints {
        Fingerprints {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The fingerprint of `spec` (defaults filled in, as stored), hex.
    pub fn of(&self, spec: &TaskSpec) -> String {
        // Protobuf maps encode in hash order: they are left out of the
        // encoding and fed in key order from the spec's sorted maps.
        let mut proto = spec_to_proto_unredacted(spec);
        proto.labels.clear();
        if let Some(pb::action::Kind::Http(http)) =
            proto.action.as_mut().and_then(|a| a.kind.as_mut())
        {
            http.headers.clear();
            http.secret_headers.clear();
        }
        let mut ctx = hmac::Context::with_key(&self.key);
        feed(&mut ctx, &proto.encode_to_vec());
        let empty = Default::default();
        let (headers, secret_headers) = match &spec.action {
            crate::task::Action::Http(http) => (&http.headers, &http.secret_headers),
            _ => (&empty, &empty),
        };
        for map in [&spec.labels, headers, secret_headers] {
            ctx.update(&(map.len() as u64).to_be_bytes());
            for (name, value) in map {
                feed(&mut ctx, name.as_bytes());
                feed(&mut ctx, value.as_bytes());
            }
        }
        crate::hex::encode(ctx.sign().as_ref())
    }
}

/// Feeds `bytes` with its length first, so no two sequences of parts give
/// the same input.
fn feed(ctx: &mut hmac::Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}
