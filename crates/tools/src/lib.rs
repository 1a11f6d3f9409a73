//! Shared parts of the tools that drive the real `webex-push` binary: a generated APNs
//! key, the server as a child process, and Webex event bodies as Webex sends them.

pub mod keys;
pub mod server;
pub mod webex;
