"""A small client for applications: cached secrets that follow rotation, and database connections that
survive it.

    from khoa.client import SecretReader, connect_postgres
    reader = SecretReader(boto3.client("secretsmanager", endpoint_url=...), watch=True)
    conn = connect_postgres(reader, "prod/db")

Built on aws-secretsmanager-caching (its cache is used as is). Beyond AWS, the reader can subscribe to
Khoa's change stream and drop a cached value the moment AWSCURRENT moves, instead of serving a stale
value until the cache's TTL runs out.
"""

from khoa.client.database import connect_mysql, connect_postgres
from khoa.client.reader import SecretReader

__all__ = ["SecretReader", "connect_mysql", "connect_postgres"]
