#!/bin/sh
# Started by dickbox-<service>@<release>.service with the release folder as
# working directory. DICKBOX_LISTEN is this instance's own socket.
set -eu
exec gunicorn --workers 2 --bind "unix:${DICKBOX_LISTEN:?DICKBOX_LISTEN is not set}" \
    --pythonpath "$(dirname "$0")/../app" app:application
