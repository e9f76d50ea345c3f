"""Shared fixtures for the core's tests."""
