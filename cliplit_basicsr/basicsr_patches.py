"""Fixes applied to BasicSR 1.4.2 from the plugin side, without editing BasicSR."""
