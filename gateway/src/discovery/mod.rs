//! Discovery.

pub mod tag;
