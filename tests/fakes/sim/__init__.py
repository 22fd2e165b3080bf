"""Simulated products for tests/fakes/fake.py: common.py holds the HTTP server and control
interface, <product>.py the product behaviour (each defines PRODUCT = a common.Product subclass)."""
