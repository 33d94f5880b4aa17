"""Throwaway servers for the test suite and the benchmarks: a PostgreSQL cluster (pg_server) and an S3 endpoint
(s3_server, moto's server mode); and `make cluster` (cluster: both, several broker nodes, HAProxy and Prometheus
as local processes). The broker itself never imports this package; it needs the `dev` extra
(asyncpg, aiobotocore, moto[server]) and the PostgreSQL server binaries on PATH."""
