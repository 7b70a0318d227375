//! The drift and quality statistics, one implementation for the live monitor and for `vane drift`. Conventions
//! and reference values: `shared/drift-cases/README.md` (matched to 1e-6 relative by the tests).

pub mod categorical;
pub mod cbpe;
pub mod ks;
pub mod multivariate;
pub mod numeric;
pub mod quality;
