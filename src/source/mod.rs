//! TODO

pub mod charset;
pub mod decimal;
pub mod geometry;
pub mod jsonb;
pub mod temporal;
pub mod value;
