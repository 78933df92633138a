//! NethServer 8 adapter (in progress).
