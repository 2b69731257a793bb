//! sidekey store (skeleton).
