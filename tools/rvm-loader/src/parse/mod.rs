//! Parsers of the adapter's files. Each takes the file's name (for
//! messages) and its text, and returns the validated model plus warnings, or
//! the first problem found as one [`Diagnostic`](crate::diag::Diagnostic).

pub mod captable;
pub mod guestref;
pub mod manifest;
pub mod names;
pub mod script;
pub mod value;
