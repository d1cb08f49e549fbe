#!/bin/sh
# Run `pip "$@"` trusting one more certificate authority when the build was given one, for builds
# behind a TLS-intercepting proxy:  docker build --secret id=extra_ca,src=/path/to/ca.pem ...
# The CA arrives as a BuildKit secret under /run/secrets, which is never part of a layer, and the
# combined bundle made here is deleted before the step ends: nothing of it stays in the image.
set -eu
extra=/run/secrets/extra_ca
if [ -s "$extra" ]; then
    bundle=$(mktemp)
    trap 'rm -f "$bundle"' EXIT
    # pip's own (certifi) bundle plus the extra CA: the public authorities stay trusted.
    cat "$(python -c 'from pip._vendor import certifi; print(certifi.where())')" "$extra" > "$bundle"
    PIP_CERT=$bundle pip "$@"
else
    pip "$@"
fi
