"""The container's HEALTHCHECK: exit 0 when ``GET /_khoa/ready`` answers 200, else 1.

Ready means more than alive: the database answers and the audit trail can be written (a node that
cannot record a call refuses it, so it should leave a load balancer's rotation). Uses the standard
library only, as the image has no curl; HTTPS when KHOA_TLS_CERT is set (the certificate is not
checked: this is the node asking itself over loopback).
"""

import os
import ssl
import sys
import urllib.error
import urllib.request

port = os.environ.get("KHOA_PORT") or "9440"
tls = bool(os.environ.get("KHOA_TLS_CERT"))
url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/_khoa/ready"
context = ssl._create_unverified_context() if tls else None  # noqa: S323 - loopback, own certificate
try:
    with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310 - fixed URL
        sys.exit(0 if response.status == 200 else 1)
except urllib.error.HTTPError as error:
    print(f"{url}: {error.code} {error.read(300).decode(errors='replace')}")
    sys.exit(1)
except OSError as error:
    print(f"{url}: {error}")
    sys.exit(1)
