"""moto_server, answering one request at a time.

moto's DynamoDB checks a transaction's conditions and then writes its items without a lock,
so two transactions sent at once on a threaded server can both pass a condition that only
one of them should (real DynamoDB serializes transactions that touch the same item). The
replica tests depend on that guarantee, so every request goes through one lock here; the
server still takes connections on several threads (keep-alive works as with moto_server).

It also serves the VPC Lattice operations moto lacks (moto_lattice.py says which and how),
and issues ACM private certificates from their authority as ACM does (moto_acm.py).

Usage: python moto_serialized.py HOST PORT   (port 0 picks a free one; the address is
printed on stderr as moto_server prints it: "Running on http://HOST:PORT").
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

import moto_acm
import moto_lattice


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    moto_lattice.install()
    moto_acm.install()
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # The whole body is produced under the lock (responses are small).
            return list(app(environ, start_response))

    run_simple(
        host,
        port,
        serialized,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
