"""File names inside an identity's certificate directory (see certs/store.py).

Apart from the store so that processes which only locate their files (every
gRPC client and server, common/tls.py) do not import `cryptography`.
"""

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CERT = "tls.crt"
KEY = "tls.key"
