"""The example service: answers /healthz and / with its release and a greeting."""
import os

RELEASE = os.environ.get("DICKBOX_RELEASE", "unknown")
VERSION = open(os.path.join(os.path.dirname(__file__), "VERSION")).read().strip()
# A version whose VERSION file says "broken" fails its health check, so the
# demo and tests can show a refused deploy.
HEALTHY = VERSION != "broken"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        status = "200 OK" if HEALTHY else "503 Service Unavailable"
        body = b"ok\n" if HEALTHY else b"unhealthy\n"
    else:
        status = "200 OK"
        body = f"{os.environ.get('GREETING', 'hello')} from {VERSION} ({RELEASE})\n".encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
