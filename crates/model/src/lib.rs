//! sidekey model (skeleton).
