//! sidekey audit (skeleton).
