//! TODO

pub mod charset;
#[cfg(test)]
mod corpus_tests;
pub mod decimal;
pub mod geometry;
pub mod jsonb;
pub mod temporal;
pub mod value;
