"""Where genomes live: the Store interface with S3 and local-folder implementations sharing one key layout.

Adapter upload/download on top of a Store (``upload_genome``, ``download_genome``) lives in
``nora.evolution.genome_store``, since it needs the genetics library and this package depends on nothing.
"""

from nora.storage.stores import LocalStore, S3Store, Store, StoreError, open_uri, s3_client

__all__ = ["LocalStore", "S3Store", "Store", "StoreError", "open_uri", "s3_client"]
