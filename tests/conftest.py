"""Shared fixtures. Servers start on loopback on ports the OS picks."""

from tests.simfixtures import sim_factory  # noqa: F401  (the simulator fixture, for every test)
