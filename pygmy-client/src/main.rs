//! `pygmy-client`: the command line (written next).
fn main() {}
