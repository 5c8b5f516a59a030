"""Imports every built-in task module so that each registers itself."""
