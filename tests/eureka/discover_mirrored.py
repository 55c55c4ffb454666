"""Discovers an app through py-eureka-client, unchanged, and calls one of its instances.

Usage: discover_mirrored.py EUREKA_URL APP PATH

Prints `BODY <text>` with what the instance answered, or `ERROR <text>` and exits 1.
The client fetches the registry (XML, gzip) as it does in production; `prefer_ip` makes it
call the instance at the `ipAddr` Eureka gave it.
"""

import sys

import py_eureka_client.eureka_client as eureka_client


def main() -> int:
    server, app, path = sys.argv[1], sys.argv[2], sys.argv[3]
    eureka_client.init(
        eureka_server=server,
        app_name="discoverer",
        should_register=False,
        should_discover=True,
    )
    try:
        body = eureka_client.do_service(app, path, prefer_ip=True, timeout=5)
        print(f"BODY {body}", flush=True)
        return 0
    except Exception as error:  # the test prints whatever went wrong
        print(f"ERROR {type(error).__name__}: {error}", flush=True)
        return 1
    finally:
        eureka_client.stop()


if __name__ == "__main__":
    sys.exit(main())
