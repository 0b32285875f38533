"""Shared fixtures. Servers start on loopback on ports the OS picks."""
