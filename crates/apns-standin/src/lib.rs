//! A local stand-in for APNs.
