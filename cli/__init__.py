"""mctl's command line."""

import os

# gRPC's C core writes INFO lines (every failed TLS handshake, for one) straight
# to stderr unless told otherwise; the CLI reports failures itself, in one line.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
