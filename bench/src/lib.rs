//! What the load generators share: reading a process's CPU and memory from `/proc`, this
//! process's own CPU, and splitting Atmosphere's `len|msg` frames; minting users' tokens.
pub mod jwt;
pub mod measure;
