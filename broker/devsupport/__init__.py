"""Throwaway servers for the test suite and the benchmarks: a PostgreSQL cluster (pg_server) and an S3 endpoint
(s3_server, moto's server mode). The broker itself never imports this package; it needs the `dev` extra
(asyncpg, aiobotocore, moto[server]) and the PostgreSQL server binaries on PATH."""
