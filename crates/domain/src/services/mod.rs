//! The use cases, implemented on top of the ports.
