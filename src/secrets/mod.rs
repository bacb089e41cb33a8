//! Secrets the server holds: named values that tasks refer to instead of
//! carrying them (`HttpAction.secret_headers`, from `--secrets-file` or
//! `RECUR_SECRET_<NAME>`), and the keys that encrypt header values in the
//! store (`--secret-key-file`).

pub mod keys;
pub mod named;

pub use keys::{KeyError, SecretKeys};
pub use named::{NamedSecrets, SecretsFileError};
