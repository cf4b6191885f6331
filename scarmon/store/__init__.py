"""Object storage: one small interface over a local folder and an S3 bucket, the names of every key a site has, the
site lock, and the read–change–conditional-write discipline every stored document goes through.

    backends.py   Store protocol, LocalStore, S3Store, open_store
    keys.py       every object key (docs/store-layout.md is written from it)
    documents.py  update_json: read–change–conditional-write with backoff; one policy for corrupt documents
    lock.py       one run per site at a time
    sequence.py   the per-site frame sequence manifest
"""

from scarmon.store.backends import Conflict, KeyMissing, LocalStore, S3Store, Store, StoreError, open_store

__all__ = ["Conflict", "KeyMissing", "LocalStore", "S3Store", "Store", "StoreError", "open_store"]
