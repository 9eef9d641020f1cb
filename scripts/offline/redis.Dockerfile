# A stand-in for the official redis:7 image built from Debian's redis-server, for hosts that
# cannot pull images. Built by scripts/images-offline.sh on top of a debootstrap'd bookworm.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

# Like the official image: data in /data, owned by the redis user, so that a fresh named volume
# mounted there is writable.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown redis:redis /data

WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
# Unlike the official image, Debian's build keeps protected mode on, which refuses clients from
# other containers when no password is set; the compose file passes --protected-mode no too.
CMD ["redis-server", "--protected-mode", "no"]
