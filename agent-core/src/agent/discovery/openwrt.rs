//! OpenWrt and NethSecurity adapter (in progress).
