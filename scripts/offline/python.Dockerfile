# A stand-in for python:3.x-slim built from Debian packages, for hosts that cannot pull images.
# Built by scripts/images-offline.sh on top of a debootstrap'd bookworm (BASE_IMAGE).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

ENV LANG=C.UTF-8

# Debian marks its interpreter as managed by apt (PEP 668, the EXTERNALLY-MANAGED marker);
# Dockerfiles written for python:3.x-slim expect a plain `pip install` into it to work.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-pip python3-venv python-is-python3 ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED

# The host's CA bundle (empty when the host has none to give): behind a TLS-intercepting proxy,
# pip inside builds reaches the package index only if it trusts what the host trusts. Kept apart
# from Debian's bundle, which apt's ca-certificates triggers may regenerate.
COPY host-ca-bundle.crt /etc/ssl/host-ca-bundle.crt
RUN if [ ! -s /etc/ssl/host-ca-bundle.crt ]; then \
        ln -sf /etc/ssl/certs/ca-certificates.crt /etc/ssl/host-ca-bundle.crt; \
    fi
ENV PIP_CERT=/etc/ssl/host-ca-bundle.crt \
    SSL_CERT_FILE=/etc/ssl/host-ca-bundle.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/host-ca-bundle.crt

CMD ["python3"]
