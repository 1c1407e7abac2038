"""moto's standalone server with DynamoDB requests serialised.

moto 5.2.1 runs every request on its own thread and does not lock its
DynamoDB backend: TransactWriteItems checks its conditions and writes without
a lock, and a failed transaction restores a copy of the whole table taken
before it began, erasing writes that other threads committed meanwhile. Two
concurrent conditional writes to one item can therefore both "succeed", or one
can silently undo the other, which DynamoDB never does. Keelson's tests race
conditional writes on purpose, so DynamoDB calls go through one lock here;
everything else (EventBridge, SQS, SSM) stays concurrent.

Usage: python3 moto-server.py -H 127.0.0.1 -p 4566
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    args = parser.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    dynamodb = threading.Lock()

    def serialised(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with dynamodb:
                # Consume the response inside the lock: the write happens
                # while the body is produced.
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple(args.host, args.port, serialised, threaded=True)


if __name__ == "__main__":
    main()
