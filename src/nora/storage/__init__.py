"""Where genomes live: the Store interface with S3 and local-folder implementations sharing one key layout."""
