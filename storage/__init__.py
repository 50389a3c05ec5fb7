"""Tidelog's durable core: object store + metadata store, and the pure logic on top.

Layering (enforced by import-linter, see pyproject.toml):

* pure modules (`errors`, `model`, `keys`, `conditions`, `records`, `segments`,
  `leases`, `cost`) do no I/O and import no SDK;
* `ports` declares the two storage protocols every backend implements;
* `adapters` holds the backends; only `factory.open_storage` chooses one;
* services (`catalog`, `sessions`, `partition_log`, `reader`, `groups`) compose
  ports and pure logic, and are what the broker and the Lambdas call.
"""
