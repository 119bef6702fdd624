"""Fakes for components that cannot run on a developer machine or in CI.

Each one is named FAKE in its docstring and imitates the real protocol closely
enough for the official clients; everything that can run for real (PostgreSQL,
Redis, Terraform, moto) does.
"""
